"""Datasets: import, validate, clean, dedupe, redact, split, build from traces."""

from corral.data.build import BuildOptions, BuildResult, build_rows
from corral.data.clean import clean_rows, dedupe_rows, normalize_whitespace, redact_rows
from corral.data.loaders import LoadResult, Rejected, load_file
from corral.data.rows import (
    KINDS,
    SPLITS,
    assign_split,
    canonical,
    detect_kind,
    read_jsonl,
    validate_rows,
    with_splits,
)

__all__ = [
    "KINDS",
    "SPLITS",
    "BuildOptions",
    "BuildResult",
    "LoadResult",
    "Rejected",
    "assign_split",
    "build_rows",
    "canonical",
    "clean_rows",
    "dedupe_rows",
    "detect_kind",
    "load_file",
    "normalize_whitespace",
    "read_jsonl",
    "redact_rows",
    "validate_rows",
    "with_splits",
]
