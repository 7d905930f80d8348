"""Evaluation items: what a dataset version's split asks the target, and the reference it expects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.errors import InvalidInputError
from corral.registry import DatasetVersion, Registry


@dataclass(frozen=True)
class Item:
    """One question: a chat request (`messages`) or a completion request (`prompt`), and its reference."""

    position: int
    request: dict[str, Any]
    reference: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return "chat" if "messages" in self.request else "completions"

    @property
    def prompt_text(self) -> str:
        """The text a metric or a judge sees as the question: the last user turn, or the prompt."""
        if "prompt" in self.request:
            return str(self.request["prompt"])
        users = [m["content"] for m in self.request["messages"] if m.get("role") == "user"]
        return users[-1] if users else ""


def row_to_item(position: int, row: dict[str, Any], kind: str) -> Item:
    """Chat rows are asked their messages minus the last assistant turn (the reference); prompt/completion
    rows their prompt; classification rows their text as a user message, the label as the reference."""
    extra = {k: v for k, v in row.items() if k not in ("messages", "prompt", "completion", "text", "label")}
    if kind == "chat":
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if messages[-1]["role"] == "assistant":
            return Item(position, {"messages": messages[:-1]}, messages[-1]["content"], extra)
        return Item(position, {"messages": messages}, None, extra)
    if kind == "prompt_completion":
        return Item(position, {"prompt": row["prompt"]}, row["completion"], extra)
    return Item(position, {"messages": [{"role": "user", "content": row["text"]}]}, str(row["label"]), extra)


@dataclass(frozen=True)
class EvalData:
    dataset: DatasetVersion
    split: str
    items: list[Item]

    @property
    def has_references(self) -> bool:
        return all(item.reference is not None for item in self.items)


def load_items(
    registry: Registry, dataset_ref: str, split: str = "test", limit: int | None = None
) -> EvalData:
    """The items of one split of a dataset version (all rows for split `all`)."""
    version = registry.datasets.get(dataset_ref)
    if split != "all" and split not in version.splits:
        have = ", ".join(sorted(version.splits)) or "none"
        raise InvalidInputError(f"dataset {version.ref} has no '{split}' split (it has: {have})")
    rows = registry.datasets.rows(version.ref, None if split == "all" else split)
    items = [row_to_item(i, row, version.schema_kind) for i, row in enumerate(rows)]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise InvalidInputError(f"dataset {version.ref} split '{split}' has no rows")
    return EvalData(version, split, items)
