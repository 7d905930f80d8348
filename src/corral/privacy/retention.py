"""Retention: traces and feedback older than `tracing.retention_days` go, in short batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow


def purge_expired(
    store: Store, days: float, *, batch: int = 500, now: datetime | None = None
) -> dict[str, int]:
    """Delete traces (with their feedback) and feedback older than `days`; one transaction per batch.

    Each batch is its own short transaction, so the trace writer is never locked out for long.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    counts = {"traces": 0, "feedback": 0}
    while True:
        with store.session() as session:
            ids = list(session.scalars(select(TraceRow.id).where(TraceRow.at < cutoff).limit(batch)))
            if ids:
                counts["feedback"] += session.execute(
                    delete(FeedbackRow).where(FeedbackRow.trace_id.in_(ids))
                ).rowcount  # type: ignore[attr-defined]
                counts["traces"] += session.execute(delete(TraceRow).where(TraceRow.id.in_(ids))).rowcount  # type: ignore[attr-defined]
        if len(ids) < batch:
            break
    while True:
        with store.session() as session:
            old = list(session.scalars(select(FeedbackRow.id).where(FeedbackRow.at < cutoff).limit(batch)))
            if old:
                counts["feedback"] += session.execute(
                    delete(FeedbackRow).where(FeedbackRow.id.in_(old))
                ).rowcount  # type: ignore[attr-defined]
        if len(old) < batch:
            break
    return counts
