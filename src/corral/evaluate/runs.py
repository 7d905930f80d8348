"""Stored evaluation runs: one row per run with its summary, one row per item; read back for compare/gate."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from corral.errors import NotFoundError
from corral.evaluate.outcome import Outcome
from corral.store import Store
from corral.store.models import EvalItemRow, EvalRunRow, ModelRow, ModelVersionRow


@dataclass
class EvalRun:
    id: str
    target: str
    target_kind: str
    dataset: str
    split: str
    metrics: list[str]
    config: dict[str, Any]
    summary: dict[str, dict[str, Any]]  # metric -> Estimate.as_dict()
    status: str
    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0
    created_by: str = ""
    created_at: datetime | None = None
    reused: bool = False
    item_count: int = 0
    error_count: int = 0

    def count(self) -> None:
        """Set the item and error counts from the outcomes."""
        self.item_count = len(self.outcomes)
        self.error_count = sum(1 for o in self.outcomes if not o.ok)

    def brief(self) -> dict[str, Any]:
        """The run without its items: what `models show` and --json print."""
        return {
            "id": self.id,
            "target": self.target,
            "dataset": self.dataset,
            "split": self.split,
            "status": self.status,
            "items": self.item_count,
            "errors": self.error_count,
            "summary": self.summary,
            "created_at": self.created_at.isoformat(timespec="seconds") if self.created_at else None,
        }


def config_key(dataset: str, split: str, config: dict[str, Any]) -> str:
    """Runs with the same key answered the same questions the same way: a stored run can stand in."""
    body = json.dumps({"dataset": dataset, "split": split, **config}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _version_id(session: Any, ref: str) -> int | None:
    name, _, number = ref.partition("@")
    if not number.isdigit():
        return None
    return session.scalar(
        select(ModelVersionRow.id)
        .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
        .where(ModelRow.name == name, ModelVersionRow.version == int(number))
    )


def save(store: Store, run: EvalRun) -> None:
    with store.session() as session:
        session.add(
            EvalRunRow(
                id=run.id,
                target=run.target,
                target_kind=run.target_kind,
                model_version_id=_version_id(session, run.target) if run.target_kind == "model" else None,
                dataset=run.dataset,
                split=run.split,
                metrics=run.metrics,
                config=run.config,
                config_key=config_key(run.dataset, run.split, run.config),
                summary=run.summary,
                status=run.status,
                item_count=run.item_count,
                error_count=run.error_count,
                duration_s=run.duration_s,
                created_by=run.created_by,
            )
        )
        session.flush()
        session.add_all(_item_row(run.id, o) for o in run.outcomes)


def _item_row(run_id: str, o: Outcome) -> EvalItemRow:
    return EvalItemRow(
        run_id=run_id,
        position=o.position,
        request=o.request,
        prediction=o.prediction,
        reference=o.reference,
        scores=o.scores,
        latency_ms=o.latency_ms,
        ttft_ms=o.ttft_ms,
        prompt_tokens=o.prompt_tokens,
        completion_tokens=o.completion_tokens,
        cost_usd=o.cost_usd,
        error=o.error,
    )


def _outcome(row: EvalItemRow) -> Outcome:
    return Outcome(
        row.position,
        dict(row.request),
        row.reference,
        row.prediction,
        row.latency_ms,
        row.ttft_ms,
        row.prompt_tokens,
        row.completion_tokens,
        row.cost_usd,
        row.error,
        dict(row.scores or {}),
    )


def _run(row: EvalRunRow, outcomes: list[Outcome]) -> EvalRun:
    return EvalRun(
        row.id,
        row.target,
        row.target_kind,
        row.dataset,
        row.split,
        list(row.metrics),
        dict(row.config),
        dict(row.summary),
        row.status,
        outcomes,
        row.duration_s,
        row.created_by,
        row.created_at,
        item_count=row.item_count,
        error_count=row.error_count,
    )


def load(store: Store, run_id: str, *, items: bool = True) -> EvalRun:
    """A stored run by id (a unique prefix of at least 6 characters will do)."""
    with store.session() as session:
        row = session.get(EvalRunRow, run_id)
        if row is None and len(run_id) >= 6:
            found = session.scalars(select(EvalRunRow).where(EvalRunRow.id.startswith(run_id)).limit(2)).all()
            row = found[0] if len(found) == 1 else None
        if row is None:
            raise NotFoundError(f"no evaluation run '{run_id}'", hint="`corral eval list` shows the runs")
        outcomes = []
        if items:
            item_rows = session.scalars(
                select(EvalItemRow).where(EvalItemRow.run_id == row.id).order_by(EvalItemRow.position)
            ).all()
            outcomes = [_outcome(r) for r in item_rows]
        return _run(row, outcomes)


def update_scores(store: Store, run: EvalRun) -> None:
    """Write back items' scores and the summary after scores were added (human raters)."""
    by_position = {o.position: o for o in run.outcomes}
    with store.session() as session:
        row = session.get(EvalRunRow, run.id)
        assert row is not None
        row.summary, row.metrics = run.summary, run.metrics
        for item in session.scalars(select(EvalItemRow).where(EvalItemRow.run_id == run.id)):
            item.scores = dict(by_position[item.position].scores)


def reusable(store: Store, target: str, dataset: str, split: str, config: dict[str, Any]) -> str | None:
    """The latest complete run of `target` with this dataset version, split and metric config."""
    key = config_key(dataset, split, config)
    with store.session() as session:
        return session.scalar(
            select(EvalRunRow.id)
            .where(EvalRunRow.target == target, EvalRunRow.config_key == key, EvalRunRow.status == "complete")
            .order_by(EvalRunRow.created_at.desc())
            .limit(1)
        )


def runs_of(store: Store, target: str | None = None, limit: int = 50) -> list[EvalRun]:
    """Runs, newest first, without their items; only one target's when given."""
    with store.session() as session:
        stmt = select(EvalRunRow).order_by(EvalRunRow.created_at.desc()).limit(limit)
        if target:
            stmt = stmt.where(EvalRunRow.target == target)
        return [_run(r, []) for r in session.scalars(stmt).all()]
