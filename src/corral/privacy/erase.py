"""Forget one user: their traces and shadow copies, feedback, trace-derived dataset rows, spool lines.

Every table in the store's metadata is either purged by a rule here (a `user` column, a
`trace_id` column pointing at the user's traces, or, for `eval_items`, the evaluation items that
asked a removed dataset row: same dataset version, split and position) or listed in
`EXEMPT_TABLES` with the reason;
a test walks the metadata so a table added later cannot be forgotten. Datasets that held the
user's rows get a new version without them, the older versions' artifacts are deleted, and model
versions trained on any of them are tagged `trained_on_deleted_data` so a retrain is due.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session

from corral.data.traces import SOURCE_TRACE
from corral.errors import InvalidInputError
from corral.registry import Registry
from corral.registry import audit as audit_log
from corral.store.models import (
    Base,
    DatasetRow,
    DatasetVersionRow,
    DriftReportRow,
    EvalItemRow,
    EvalRunRow,
    ModelVersionRow,
    TraceRow,
)

DELETED_TAG = "trained_on_deleted_data"
EXEMPT_TABLES = {
    "pipeline_runs": "refresh runs: a pipeline file, its trigger and status, written by operators",
    "pipeline_stages": "a run's stages: counts and references to dataset and model versions, no user rows",
    "models": "model names and descriptions, written by operators",
    "model_versions": "weights and lineage; versions trained on deleted rows are tagged instead",
    "aliases": "names of versions",
    "alias_events": "who moved an alias (operators, not end users)",
    "datasets": "dataset names; their rows are handled through the artifacts",
    "dataset_versions": "row counts and lineage; the rows live in artifacts, rewritten here",
    "prompts": "prompt template names",
    "prompt_versions": "templates written by operators",
    "audit_log": "records that a deletion happened (subject user:ID, counts), never the content",
    "api_keys": "key hashes and limits, no end-user data",
    "deployments": "routing specs",
    "gateway_heartbeats": "each gateway replica's in-flight counts per model version, no end-user data",
    "alembic_version": "the schema revision",
    "eval_runs": "evaluation summaries (aggregate scores) and configuration, no end-user text",
    "leases": "which replica runs a background loop",
    "monitor_rollups": "counts and latency histograms per deployment and minute; distinct users only as counts",
    "monitor_state": "where the rollup job stopped",
    "alert_events": "alert rules' values and thresholds per deployment",
    "dashboard_sessions": "dashboard logins: a token hash, the API key and an expiry",
    "drift_reports": "statistics per feature; the example prompts of a user are removed (scrub_drift_examples)",
}
_BATCH = 500
T = TypeVar("T")
# dataset version ref -> split ("all" for the whole version) -> positions of the removed rows
Removed = dict[str, dict[str, set[int]]]


def purge_rule(table: Table) -> str | None:
    """How a table's rows of one user are found: "user", "trace_id", "id" (the traces),
    "dataset_row" (evaluation items that asked a removed dataset row), or None."""
    if table.name == TraceRow.__tablename__:
        return "id"
    if table.name == EvalItemRow.__tablename__:
        return "dataset_row"
    if "user" in table.c:
        return "user"
    if "trace_id" in table.c:
        return "trace_id"
    return None


@dataclass
class ErasureReport:
    user: str
    dry_run: bool
    tables: dict[str, int] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    models_flagged: list[str] = field(default_factory=list)
    spool_lines: int = 0
    unruled_tables: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


def _trace_ids(session: Session, user: str) -> list[str]:
    """The user's traces and, transitively, the shadow copies made of them."""
    ids = list(session.scalars(select(TraceRow.id).where(TraceRow.user == user)))
    frontier = ids
    while frontier:
        found: list[str] = []
        for chunk in _chunks(frontier):
            found += session.scalars(select(TraceRow.id).where(TraceRow.shadow_of.in_(chunk)))
        frontier = [i for i in found if i not in set(ids)]
        ids += frontier
    return ids


def removed_positions(rows: list[dict[str, Any]], ids: set[str]) -> dict[str, set[int]]:
    """Per split, and for `all`, the positions of the rows derived from `ids`, numbered as an
    evaluation numbers its items (the rows of that split in artifact order)."""
    splits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("split"):
            splits[str(row["split"])].append(row)
    splits["all"] = rows
    found = {
        name: {i for i, r in enumerate(part) if r.get(SOURCE_TRACE) in ids} for name, part in splits.items()
    }
    return {name: positions for name, positions in found.items() if positions}


def _eval_item_clauses(removed: Removed) -> list[Any]:
    clauses = []
    for ref, splits in removed.items():
        for split, positions in splits.items():
            runs = select(EvalRunRow.id).where(EvalRunRow.dataset == ref, EvalRunRow.split == split)
            for chunk in _chunks(sorted(positions)):
                clauses.append(EvalItemRow.run_id.in_(runs) & EvalItemRow.position.in_(chunk))
    return clauses


def _purge_tables(
    session: Session, user: str, ids: list[str], removed: Removed, report: ErasureReport
) -> None:
    for table in Base.metadata.sorted_tables:
        rule = purge_rule(table)
        if rule is None:
            if table.name not in EXEMPT_TABLES:
                report.unruled_tables.append(str(table.name))
            continue
        count = 0
        if rule == "user":
            where = [table.c.user == user]
        elif rule == "dataset_row":
            where = _eval_item_clauses(removed)
        else:
            column = table.c.id if rule == "id" else table.c.trace_id
            where = [column.in_(chunk) for chunk in _chunks(ids)]
        for clause in where:
            if report.dry_run:
                count += session.scalar(select(func.count()).select_from(table).where(clause)) or 0
            else:
                count += session.execute(delete(table).where(clause)).rowcount or 0  # type: ignore[attr-defined]
        name = str(table.name)  # a plain str: SQLAlchemy's quoted_name is not a JSON key for orjson
        report.tables[name] = report.tables.get(name, 0) + count


def scrub_drift_examples(session: Session, ids: set[str], *, dry_run: bool) -> int:
    """Remove the user's prompts from stored drift reports' new-topic examples; returns how many."""
    removed = 0
    for row in session.scalars(select(DriftReportRow)):
        topics = (row.report or {}).get("new_topics") or {}
        traces = topics.get("example_traces") or []
        examples = topics.get("examples") or []
        # A report without trace ids beside its examples cannot tell whose they are: drop them all.
        keep = [k for k, t in enumerate(traces) if t not in ids] if traces else []
        if len(keep) == len(examples):
            continue
        removed += len(examples) - len(keep)
        if not dry_run:
            topics = {
                **topics,
                "examples": [examples[k] for k in keep if k < len(examples)],
                "example_traces": [traces[k] for k in keep],
            }
            row.report = {**row.report, "new_topics": topics}
    return removed


def _dataset_versions(registry: Registry) -> list[tuple[str, DatasetVersionRow]]:
    with registry.store.session() as session:
        rows = session.execute(
            select(DatasetRow.name, DatasetVersionRow)
            .join(DatasetRow, DatasetRow.id == DatasetVersionRow.dataset_id)
            .order_by(DatasetRow.name, DatasetVersionRow.version)
        ).all()
        session.expunge_all()
        return [(name, row) for name, row in rows]


def _rows(registry: Registry, digest: str) -> list[dict[str, Any]]:
    if not registry.artifacts.exists(digest):
        return []
    return [orjson.loads(line) for line in registry.artifacts.get_bytes(digest).splitlines() if line]


def _rewrite_datasets(
    registry: Registry, ids: set[str], removed_rows: Removed, report: ErasureReport
) -> list[str]:
    """New versions without the user's rows; older versions holding them lose their artifacts.
    `removed_rows` gets, per version, where the removed rows sat (for the evaluation items)."""
    affected: list[str] = []
    versions = _dataset_versions(registry)
    latest = {name: row.version for name, row in versions}
    all_digests = {row.digest for _, row in versions}
    for name, row in versions:
        rows = _rows(registry, row.digest)
        kept = [r for r in rows if r.get(SOURCE_TRACE) not in ids]
        removed = len(rows) - len(kept)
        if not removed:
            continue
        ref = f"{name}@{row.version}"
        affected.append(ref)
        removed_rows[ref] = removed_positions(rows, ids)
        entry: dict[str, Any] = {"version": ref, "rows_removed": removed, "artifact_deleted": True}
        if not report.dry_run:
            if row.version == latest[name] and kept:
                new = registry.datasets.register(
                    name,
                    kept,
                    kind=row.schema_kind,
                    lineage={"source": "erasure", "from": ref, "rows_removed": removed},
                    tags={**row.tags, "erasure_of": ref},
                )
                entry["new_version"] = new.ref
            registry.artifacts.delete(row.digest, keep=all_digests - {row.digest})
            _mark_purged(registry, row.id)
        report.datasets.append(entry)
    return affected


def _mark_purged(registry: Registry, version_id: int) -> None:
    with registry.store.session() as session:
        version = session.get(DatasetVersionRow, version_id)
        if version is not None:
            version.tags = {**version.tags, "artifact_purged": "erasure"}


def _flag_models(registry: Registry, datasets: Iterable[str], report: ErasureReport) -> None:
    wanted = set(datasets)
    if not wanted:
        return
    with registry.store.session() as session:
        for version in session.scalars(select(ModelVersionRow)):
            if (version.lineage or {}).get("dataset") not in wanted:
                continue
            model = version.model_id
            report.models_flagged.append(f"{_model_name(session, model)}@{version.version}")
            if not report.dry_run:
                version.tags = {**(version.tags or {}), DELETED_TAG: True}


def _model_name(session: Session, model_id: int) -> str:
    from corral.store.models import ModelRow

    return session.scalar(select(ModelRow.name).where(ModelRow.id == model_id)) or str(model_id)


def _spooled_by(record: dict[str, Any], user: str, ids: set[str]) -> bool:
    nested = record.get("row")
    row: dict[str, Any] = nested if isinstance(nested, dict) else record
    return row.get("user") == user or row.get("id") in ids or row.get("trace_id") in ids


def purge_spool(directory: Path | None, user: str, ids: set[str], *, dry_run: bool) -> int:
    """Drop the user's lines from every spool file (rewritten atomically); returns how many."""
    if directory is None or not directory.is_dir():
        return 0
    removed = 0
    for path in sorted(directory.glob("spool-*.jsonl")):
        kept, dropped = [], 0
        for line in path.read_bytes().splitlines():
            try:
                record = orjson.loads(line) if line.strip() else None
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict) and _spooled_by(record, user, ids):
                dropped += 1
            elif line.strip():
                kept.append(line)
        removed += dropped
        if dropped and not dry_run:
            tmp = path.with_suffix(".rewrite")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, path)
    return removed


def erase_user(
    registry: Registry, user: str, *, dry_run: bool = False, spool_dir: Path | None = None
) -> ErasureReport:
    """Remove everything of `user` (or, with dry_run, count it) and write an audit entry."""
    if not user or not user.strip():
        raise InvalidInputError("a user id is required")
    report = ErasureReport(user, dry_run)
    with registry.store.session() as session:
        ids = _trace_ids(session, user)
    removed: Removed = {}
    affected = _rewrite_datasets(registry, set(ids), removed, report)
    _flag_models(registry, affected, report)
    report.spool_lines = purge_spool(spool_dir, user, set(ids), dry_run=dry_run)
    with registry.store.session() as session:
        _purge_tables(session, user, ids, removed, report)
        report.tables["drift_reports"] = scrub_drift_examples(session, set(ids), dry_run=dry_run)
        if not dry_run:
            counts = {k: v for k, v in report.tables.items() if v}
            audit_log.record(
                session,
                registry.actor,
                "privacy.delete",
                f"user:{user}",
                None,
                {
                    "tables": counts,
                    "datasets": report.datasets,
                    "models_flagged": report.models_flagged,
                    "spool_lines": report.spool_lines,
                },
            )
    return report
