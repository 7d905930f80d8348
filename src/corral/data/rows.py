"""Dataset rows: the three schema kinds, row validation, canonical form and deterministic splits."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corral.errors import InvalidInputError, NotFoundError

KINDS = ("chat", "prompt_completion", "classification")
SPLITS = ("train", "validation", "test")
ROLES = {"system", "user", "assistant", "tool"}
# Percent of rows per split when a row carries none; decided by a hash so it never changes.
SPLIT_RATIOS = {"train": 80, "validation": 10, "test": 10}


def detect_kind(row: dict[str, Any]) -> str | None:
    if "messages" in row:
        return "chat"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row and "label" in row:
        return "classification"
    return None


def row_problem(row: Any, kind: str) -> str | None:
    """Why `row` is not a valid row of `kind`, or None when it is."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    found = detect_kind(row)
    if found != kind:
        expected = {
            "chat": "'messages'",
            "prompt_completion": "'prompt' and 'completion'",
            "classification": "'text' and 'label'",
        }[kind]
        return f"expected a {kind} row with {expected}, got keys {sorted(row)}"
    if kind == "chat":
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                return f"messages[{i}] needs a role among {sorted(ROLES)}"
            if not isinstance(message.get("content"), str):
                return f"messages[{i}].content must be a string"
        if not any(message["role"] == "assistant" for message in messages):
            return "no assistant message: a chat row needs the answer to learn from"
    elif kind == "prompt_completion":
        if not isinstance(row["prompt"], str) or not isinstance(row["completion"], str):
            return "'prompt' and 'completion' must be strings"
    elif not isinstance(row["text"], str) or not isinstance(row["label"], str | int | bool):
        return "'text' must be a string and 'label' a string or integer"
    split = row.get("split")
    if split is not None and split not in SPLITS:
        return f"'split' must be one of {', '.join(SPLITS)}, got {split!r}"
    return None


def canonical(row: dict[str, Any]) -> str:
    """One line of canonical JSON: the unit of hashing, dedupe and diff."""
    return json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def assign_split(row: dict[str, Any], salt: str = "", ratios: dict[str, int] | None = None) -> str:
    """A deterministic split from the row's content (without any split field).

    `ratios` gives percents per split (default 80/10/10); they must add up to 100.
    """
    body = canonical({k: v for k, v in row.items() if k != "split"})
    bucket = int(hashlib.sha256((salt + body).encode()).hexdigest()[:8], 16) % 100
    edge = 0
    for split, share in (ratios or SPLIT_RATIOS).items():
        edge += share
        if bucket < edge:
            return split
    return "test"


def with_splits(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row if row.get("split") else {**row, "split": assign_split(row)} for row in rows]


def validate_rows(rows: list[Any], kind: str | None = None, *, source: str = "rows") -> str:
    """Check every row against one kind (detected from the first row when not given); return it."""
    if not rows:
        raise InvalidInputError(f"{source} has no rows")
    if kind is None:
        kind = detect_kind(rows[0]) if isinstance(rows[0], dict) else None
        if kind is None:
            raise InvalidInputError(
                f"{source}: cannot tell the schema of row 1",
                hint="rows need 'messages' (chat), 'prompt'+'completion', or 'text'+'label'",
            )
    elif kind not in KINDS:
        raise InvalidInputError(f"unknown schema kind '{kind}'; use one of {', '.join(KINDS)}")
    for number, row in enumerate(rows, start=1):
        problem = row_problem(row, kind)
        if problem:
            raise InvalidInputError(f"{source}: row {number}: {problem}")
    return kind


def check_data_file(path: Path) -> None:
    """A dataset file that exists and is a file: a directory or a missing path is a clear error."""
    if path.is_dir():
        raise InvalidInputError(
            f"{path} is a directory; a dataset is one file",
            hint="give a .jsonl, .json, .csv or .parquet file",
        )
    if not path.is_file():
        raise NotFoundError(f"file {path} does not exist")


def read_jsonl(path: str | Path) -> list[Any]:
    """Parse a JSONL file; a bad line is an error naming its line number."""
    path = Path(path)
    check_data_file(path)
    rows: list[Any] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    if not rows:
        raise InvalidInputError(f"{path} is empty")
    return rows
