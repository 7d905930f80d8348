"""Retention: traces and feedback older than `tracing.retention_days` go, in short batches."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow, TraceSearchRow


def _in_batches(store: Store, ids: Any, batch: int, purge: Callable[[Session, list[Any]], int]) -> int:
    """Select up to `batch` ids and purge them, one short transaction each, until none are left."""
    total = 0
    while True:
        with store.session() as session:
            found = list(session.scalars(ids.limit(batch)))
            if found:
                total += purge(session, found)
        if len(found) < batch:
            return total


def _traces(session: Session, ids: list[Any]) -> int:
    session.execute(delete(FeedbackRow).where(FeedbackRow.trace_id.in_(ids)))
    session.execute(delete(TraceSearchRow).where(TraceSearchRow.trace_id.in_(ids)))
    return int(session.execute(delete(TraceRow).where(TraceRow.id.in_(ids))).rowcount)  # type: ignore[attr-defined]


def _feedback(session: Session, ids: list[Any]) -> int:
    return int(session.execute(delete(FeedbackRow).where(FeedbackRow.id.in_(ids))).rowcount)  # type: ignore[attr-defined]


def purge_expired(
    store: Store, days: float, *, batch: int = 500, now: datetime | None = None
) -> dict[str, int]:
    """Delete feedback and traces older than `days`; one short transaction per batch.

    Old feedback goes first (also feedback on traces that are not old), then old traces with any
    feedback left on them, so the trace writer is never locked out for long.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    feedback = _in_batches(store, select(FeedbackRow.id).where(FeedbackRow.at < cutoff), batch, _feedback)
    traces = _in_batches(store, select(TraceRow.id).where(TraceRow.at < cutoff), batch, _traces)
    return {"traces": traces, "feedback": feedback}
