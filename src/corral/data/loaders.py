"""Read JSONL, CSV and Parquet files into dataset rows, validating each row; bad rows go to a rejects file.

Every input row ends up either in `rows` or in the rejects file with its line number and the
reason, never dropped silently. A file whose rows match no schema at all is an error, as is an
empty file: those are the wrong file, not a few bad rows.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.data.rows import KINDS, check_data_file, detect_kind, row_problem
from corral.errors import InvalidInputError

FORMATS = ("jsonl", "csv", "parquet")
SCHEMA_HINT = "rows need 'messages' (chat), 'prompt'+'completion', or 'text'+'label'"


@dataclass
class Rejected:
    line: int
    reason: str
    raw: Any


@dataclass
class LoadResult:
    """Accepted rows of one schema kind, the rejected ones, and where the rejects were written."""

    rows: list[dict[str, Any]]
    kind: str
    total: int
    rejected: list[Rejected] = field(default_factory=list)
    rejects_path: Path | None = None

    @property
    def summary(self) -> str:
        text = f"{self.total} rows read, {len(self.rows)} accepted, {len(self.rejected)} rejected"
        return text + (f" (see {self.rejects_path})" if self.rejects_path else "")


def file_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise InvalidInputError(f"unknown format '{fmt}'; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    found = {"jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl", "csv": "csv", "parquet": "parquet"}.get(
        suffix
    )
    if found is None:
        raise InvalidInputError(
            f"cannot tell the format of {path} from its extension", hint="use --format jsonl|csv|parquet"
        )
    return found


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, line.rstrip("\n"), f"not valid JSON ({exc.msg})"


def _decode_cells(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """CSV cells are strings: a `messages` cell holds JSON, an empty `split` cell means none."""
    row: dict[str, Any] = {k: v for k, v in record.items() if k is not None}
    if None in record:
        return row, "more cells than header columns"
    if "messages" in row and isinstance(row["messages"], str):
        try:
            row["messages"] = json.loads(row["messages"])
        except json.JSONDecodeError as exc:
            return row, f"'messages' cell is not valid JSON ({exc.msg})"
    if row.get("split") in ("", None):
        row.pop("split", None)
    return row, None


def _csv_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            row, problem = _decode_cells(record)
            yield reader.line_num, row, problem


def _parquet_records(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise InvalidInputError("reading Parquet needs pyarrow", hint="pip install 'corral[data]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
        raise InvalidInputError(f"{path} is not a readable Parquet file: {exc}") from None
    for number, record in enumerate(table.to_pylist(), start=1):
        row, problem = _decode_cells({k: v for k, v in record.items() if v is not None})
        yield number, row, problem


def read_records(path: Path, fmt: str) -> Iterator[tuple[int, Any, str | None]]:
    """(line or row number, parsed record, parse problem or None) for each record of the file."""
    reader = {"jsonl": _jsonl_records, "csv": _csv_records, "parquet": _parquet_records}[fmt]
    return reader(path)


def write_rejects(path: Path, rejected: list[Rejected]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for r in rejected:
            handle.write(json.dumps({"line": r.line, "reason": r.reason, "row": r.raw}, ensure_ascii=False))
            handle.write("\n")


def load_file(
    path: str | Path,
    kind: str | None = None,
    *,
    fmt: str | None = None,
    rejects: str | Path | None = None,
) -> LoadResult:
    """Read and validate a dataset file; bad rows go to `rejects` (default: PATH.rejects.jsonl)."""
    path = Path(path)
    check_data_file(path)
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"unknown schema kind '{kind}'; use one of {', '.join(KINDS)}")
    records = list(read_records(path, file_format(path, fmt)))
    if not records:
        raise InvalidInputError(f"{path} is empty")
    if kind is None:
        kinds = [detect_kind(r) for _, r, problem in records if problem is None and isinstance(r, dict)]
        known = [k for k in kinds if k]
        if not known:
            first = records[0][1]
            keys = sorted(first) if isinstance(first, dict) else type(first).__name__
            raise InvalidInputError(
                f"{path}: no row matches a dataset schema (row 1 has {keys})", hint=SCHEMA_HINT
            )
        kind = max(KINDS, key=known.count)  # the most common kind; the rest are rejects
    rows: list[dict[str, Any]] = []
    rejected: list[Rejected] = []
    for number, record, problem in records:
        problem = problem or row_problem(record, kind)
        if problem:
            rejected.append(Rejected(number, problem, record))
        else:
            rows.append(record)
    if not rows:
        first = rejected[0]
        raise InvalidInputError(
            f"{path}: every row was rejected; line {first.line}: {first.reason}", hint=SCHEMA_HINT
        )
    rejects_path = None
    if rejected:
        rejects_path = Path(rejects) if rejects else path.with_name(path.name + ".rejects.jsonl")
        write_rejects(rejects_path, rejected)
    return LoadResult(rows, kind, len(records), rejected, rejects_path)
