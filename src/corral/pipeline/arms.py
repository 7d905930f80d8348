"""The canary's arms as the store sees them now: requests, errors, latency p95 and feedback per version."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from corral.data.traces import USER_SOURCE
from corral.monitor.sketch import nearest_rank
from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow


def arm_stats(
    store: Store, deployment: str, since: datetime, versions: list[str], until: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per version in `versions`, over the deployment's traffic from `since` to `until` (the
    canary's span; open while it runs), shadows left out."""
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    feedback = (
        select(FeedbackRow.trace_id, func.avg(FeedbackRow.score).label("score"))
        .where(FeedbackRow.source == USER_SOURCE)
        .group_by(FeedbackRow.trace_id)
        .subquery()
    )
    query = (
        select(TraceRow.model_version, TraceRow.status, TraceRow.latency_ms, feedback.c.score)
        .outerjoin(feedback, feedback.c.trace_id == TraceRow.id)
        .where(TraceRow.deployment == deployment, TraceRow.at >= since, TraceRow.shadow_of.is_(None))
        .where(TraceRow.model_version.in_(versions))
    )
    if until is not None:
        query = query.where(TraceRow.at < (until if until.tzinfo else until.replace(tzinfo=UTC)))
    with store.session() as session:
        found = session.execute(query).all()
    rows = []
    for version in versions:
        mine = [r for r in found if r.model_version == version]
        scores = [float(r.score) for r in mine if r.score is not None]
        rows.append(
            {
                "version": version,
                "requests": len(mine),
                "error_rate": sum(1 for r in mine if r.status >= 500) / len(mine) if mine else None,
                "latency_p95_ms": nearest_rank([float(r.latency_ms) for r in mine if r.status < 400], 0.95),
                "feedback_mean": sum(scores) / len(scores) if scores else None,
                "feedback_count": len(scores),
            }
        )
    return rows
