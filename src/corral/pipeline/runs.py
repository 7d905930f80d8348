"""Pipeline runs and their stages in the store: what ran, on what inputs, what it made, how long it took."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import desc, select

from corral.errors import NotFoundError
from corral.store import Store
from corral.store.models import PipelineRunRow, PipelineStageRow, utcnow

RUNNING, SUCCEEDED, REJECTED, FAILED = "running", "succeeded", "rejected", "failed"
DONE, SKIPPED = "done", "skipped"


def _utc(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StageRecord:
    name: str
    position: int
    status: str
    inputs: dict[str, Any]
    output: dict[str, Any]
    error: str | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None

    @property
    def finished(self) -> bool:
        return self.status in (DONE, SKIPPED)


@dataclass(frozen=True)
class PipelineRun:
    id: str
    pipeline: str
    file: str
    spec: dict[str, Any]
    trigger: str
    status: str
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    stages: list[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    def output(self, name: str) -> dict[str, Any]:
        """A finished stage's output (the next stages' inputs); {} when it has none."""
        found = self.stage(name)
        return dict(found.output) if found is not None else {}


def _stage(row: PipelineStageRow) -> StageRecord:
    return StageRecord(
        row.name, row.position, row.status, dict(row.inputs or {}), dict(row.output or {}), row.error,
        row.attempts, _utc(row.started_at), _utc(row.finished_at), row.duration_s,
    )  # fmt: skip


def _run(row: PipelineRunRow, stages: list[PipelineStageRow]) -> PipelineRun:
    return PipelineRun(
        row.id, row.pipeline, row.file, dict(row.spec or {}), row.trigger, row.status, row.error,
        _utc(row.started_at), _utc(row.finished_at), [_stage(s) for s in sorted(stages, key=lambda s: s.position)],
    )  # fmt: skip


class RunStore:
    """Reads and writes pipeline runs; each write is one short transaction, so a kill loses at most a stage."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, pipeline: str, file: str, spec: dict[str, Any], trigger: str) -> PipelineRun:
        run_id = uuid.uuid4().hex
        with self.store.session() as session:
            session.add(
                PipelineRunRow(
                    id=run_id, pipeline=pipeline, file=file, spec=spec, trigger=trigger, status=RUNNING
                )
            )
        return self.get(run_id)

    def get(self, run_id: str) -> PipelineRun:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id)
            if row is None:
                matches = session.scalars(
                    select(PipelineRunRow)
                    .where(PipelineRunRow.id.startswith(run_id, autoescape=True))
                    .limit(2)
                ).all()
                if len(run_id) < 4 or len(matches) != 1:
                    raise NotFoundError(
                        f"no pipeline run '{run_id}'", hint="`corral pipeline list` shows the runs"
                    )
                row = matches[0]
            stages = session.scalars(select(PipelineStageRow).where(PipelineStageRow.run_id == row.id)).all()
            return _run(row, list(stages))

    def list(self, pipeline: str | None = None, limit: int = 50) -> list[PipelineRun]:
        query = select(PipelineRunRow).order_by(desc(PipelineRunRow.started_at)).limit(limit)
        if pipeline:
            query = query.where(PipelineRunRow.pipeline == pipeline)
        with self.store.session() as session:
            return [_run(row, []) for row in session.scalars(query)]

    def begin_stage(self, run_id: str, name: str, position: int, inputs: dict[str, Any]) -> None:
        """Mark a stage running; a stage that ran before (and did not finish) counts another attempt."""
        with self.store.session() as session:
            row = session.scalars(
                select(PipelineStageRow).where(
                    PipelineStageRow.run_id == run_id, PipelineStageRow.name == name
                )
            ).first()
            if row is None:
                session.add(
                    PipelineStageRow(
                        run_id=run_id, name=name, position=position, status=RUNNING, inputs=inputs, output={}
                    )
                )
                return
            row.status, row.inputs, row.error = RUNNING, inputs, None
            row.attempts, row.started_at, row.finished_at = (row.attempts or 0) + 1, utcnow(), None

    def update_output(self, run_id: str, name: str, output: dict[str, Any]) -> None:
        """A running stage's output so far (the canary's decisions as they come)."""
        self._stage_values(run_id, name, output=output)

    def finish_stage(
        self,
        run_id: str,
        name: str,
        status: str,
        output: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        now = utcnow()
        with self.store.session() as session:
            row = session.scalars(
                select(PipelineStageRow).where(
                    PipelineStageRow.run_id == run_id, PipelineStageRow.name == name
                )
            ).one()
            row.status, row.error, row.finished_at = status, error, now
            if output is not None:
                row.output = output
            started = _utc(row.started_at)
            row.duration_s = (now - started).total_seconds() if started else None

    def _stage_values(self, run_id: str, name: str, **values: Any) -> None:
        with self.store.session() as session:
            row = session.scalars(
                select(PipelineStageRow).where(
                    PipelineStageRow.run_id == run_id, PipelineStageRow.name == name
                )
            ).one()
            for key, value in values.items():
                setattr(row, key, value)

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        with self.store.session() as session:
            row = session.get(PipelineRunRow, run_id)
            if row is None:
                raise NotFoundError(f"no pipeline run '{run_id}'")
            row.status, row.error = status, error
            row.finished_at = None if status == RUNNING else utcnow()
