"""Dataset builds: clean → redact → dedupe → split, as one pure function with a report of every step."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from corral.data.clean import clean_rows, dedupe_rows, redact_rows, texts
from corral.data.rows import SPLITS, assign_split, validate_rows
from corral.errors import InvalidInputError


@dataclass(frozen=True)
class BuildOptions:
    """What a build does; recorded in the new version's lineage."""

    min_chars: int = 1
    max_chars: int | None = None
    dedupe: bool = True
    near_duplicates: float | None = 0.85  # Jaccard threshold; None: exact duplicates only
    redact: bool = True
    resplit: bool = False  # True: replace existing splits by hash
    split_ratios: dict[str, int] = field(default_factory=lambda: {"train": 80, "validation": 10, "test": 10})
    split_salt: str = ""

    def check(self) -> None:
        if set(self.split_ratios) - set(SPLITS) or sum(self.split_ratios.values()) != 100:
            raise InvalidInputError(
                f"split ratios {self.split_ratios} must name only {', '.join(SPLITS)} and add up to 100"
            )
        if self.near_duplicates is not None and not 0 < self.near_duplicates <= 1:
            raise InvalidInputError("near-duplicate threshold must be in (0, 1]")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise InvalidInputError("max_chars must be at least min_chars")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BuildResult:
    rows: list[dict[str, Any]]
    kind: str
    report: dict[str, Any]


def split_key(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """What a split is decided on: the prompt side, so one question never lands in two splits."""
    if kind == "chat":
        return {"prompt": [m["content"] for m in row["messages"] if m["role"] != "assistant"]}
    return {"prompt": texts(row, kind)[0]}


def build_rows(rows: list[dict[str, Any]], options: BuildOptions, kind: str | None = None) -> BuildResult:
    """Apply the build steps in order; the report counts what each removed or changed."""
    options.check()
    kind = validate_rows(rows, kind, source="build input")
    report: dict[str, Any] = {"input": len(rows)}
    out, report["clean"] = clean_rows(rows, kind, min_chars=options.min_chars, max_chars=options.max_chars)
    if options.redact:
        out, report["redacted"] = redact_rows(out, kind)
    if options.dedupe:
        out, report["duplicates"] = dedupe_rows(out, kind, near=options.near_duplicates)
    if not out:
        raise InvalidInputError("the build removed every row", hint=f"report: {report}")
    out = [
        row
        if row.get("split") and not options.resplit
        else {**row, "split": assign_split(split_key(row, kind), options.split_salt, options.split_ratios)}
        for row in out
    ]
    report["output"] = len(out)
    return BuildResult(out, kind, report)
