"""Per-arm statistics of a canary, read from the store: traces (errors, latency) and feedback scores.

An arm is one model version of one deployment (`traces.model_version`, e.g. `support@2`): live
traffic only, no shadow copies and no evaluation requests. Values come in arrival order, which the
always-valid bounds need (`canary_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import NotFoundError
from corral.monitor.rollup import LIVE, utc
from corral.monitor.sketch import nearest_rank
from corral.pipeline.canary_stats import summarize
from corral.pipeline.canary_verdict import ArmStats, CanarySpec
from corral.registry import aliases, parse_ref
from corral.store import Store
from corral.store.models import AuditRow, DeploymentRow, FeedbackRow, ModelRow, TraceRow

ERROR_STATUS = 500  # 5xx is the model's or its worker's failure; 4xx are the caller's
DECISION_ACTIONS = ("canary.start", "canary.hold", "canary.advance", "canary.promote", "canary.rollback")


def audit_subject(deployment: str) -> str:
    return f"deployment:{deployment}"


@dataclass(frozen=True)
class Threshold:
    """Production's latency p95 that the latency metric compares against, and where it came from.

    `calibration_until` is set when the threshold was taken from the canary's own first production
    requests: those (up to and including that trace) then stay out of production's latency values.
    """

    ms: float | None
    source: str  # fixed | baseline | calibration | none
    calibration_until: tuple[datetime, str] | None = None


def _traces(
    store: Store, deployment: str, version: str, since: datetime, until: datetime | None, *, first_ok: int = 0
) -> list[Any]:
    """An arm's traces in arrival order; `first_ok`: only the first that many successful ones."""
    query = (
        select(TraceRow.at, TraceRow.id, TraceRow.status, TraceRow.latency_ms)
        .where(
            TraceRow.deployment == deployment, TraceRow.model_version == version, TraceRow.at >= since, *LIVE
        )
        .order_by(TraceRow.at, TraceRow.id)
    )
    if until is not None:
        query = query.where(TraceRow.at < until)
    if first_ok:
        query = query.where(TraceRow.status < 400).limit(first_ok)
    with store.reading() as session:
        return list(session.execute(query).all())


def _scores(store: Store, deployment: str, version: str, since: datetime, source: str) -> list[float]:
    with store.reading() as session:
        return list(
            session.scalars(
                select(FeedbackRow.score)
                .join(TraceRow, TraceRow.id == FeedbackRow.trace_id)
                .where(TraceRow.deployment == deployment, TraceRow.model_version == version)
                .where(TraceRow.at >= since, FeedbackRow.source == source, *LIVE)
                .order_by(FeedbackRow.at, FeedbackRow.id)
            ).all()
        )


def latency_threshold(
    store: Store, deployment: str, production: str, started: datetime, spec: CanarySpec
) -> Threshold:
    """The fixed threshold, else production's p95 before the canary, else that of its first canary requests."""
    if spec.latency_threshold_ms is not None:
        return Threshold(spec.latency_threshold_ms, "fixed")
    before = started - timedelta(seconds=spec.latency_baseline_s)
    baseline = [
        r.latency_ms for r in _traces(store, deployment, production, before, started) if r.status < 400
    ]
    if len(baseline) >= spec.min_samples:
        return Threshold(nearest_rank(baseline, 0.95), "baseline")
    first = _traces(store, deployment, production, started, None, first_ok=spec.min_samples)
    if len(first) < spec.min_samples:
        return Threshold(None, "none")
    return Threshold(
        nearest_rank([r.latency_ms for r in first], 0.95), "calibration", (utc(first[-1].at), first[-1].id)
    )


def collect(
    store: Store,
    deployment: str,
    version: str,
    since: datetime,
    spec: CanarySpec,
    *,
    threshold: Threshold,
    step_since: datetime | None = None,
) -> ArmStats:
    """One arm's statistics for the traffic since `since` (requests since `step_since` counted apart)."""
    tuned = spec.alpha / 2
    rows = _traces(store, deployment, version, since, None)
    ok = [r for r in rows if r.status < 400]
    if threshold.calibration_until is not None:
        ok = [r for r in ok if (utc(r.at), r.id) > threshold.calibration_until]
    metrics = {"error_rate": summarize([float(r.status >= ERROR_STATUS) for r in rows], tuned)}
    if threshold.ms is not None:
        metrics["latency_p95"] = summarize([float(r.latency_ms > threshold.ms) for r in ok], tuned)
    metrics["feedback"] = summarize(_scores(store, deployment, version, since, spec.feedback_source), tuned)
    if spec.online_source:
        metrics["online"] = summarize(_scores(store, deployment, version, since, spec.online_source), tuned)
    step_start = utc(step_since) if step_since is not None else None
    step_requests = sum(1 for r in rows if step_start is None or utc(r.at) >= step_start)
    return ArmStats(version=version, requests=len(rows), step_requests=step_requests, metrics=metrics)


def resolve_version(store: Store, target: str) -> str:
    """`support@production` or `support@3` as the `support@N` that traces record."""
    ref = parse_ref(target)
    if ref.version is not None:
        return f"{ref.name}@{ref.version}"
    with store.reading() as session:
        model = session.scalar(select(ModelRow).where(ModelRow.name == ref.name))
        number = aliases.current(session, "model", model.id, ref.alias or "production") if model else None
    if number is None:
        raise NotFoundError(f"'{target}' names no model version")
    return f"{ref.name}@{number}"


def arm_stats(
    store: Store, deployment: str, since: datetime, spec: CanarySpec | None = None
) -> dict[str, ArmStats]:
    """Live per-arm statistics of a deployment's canary since `since` (`corral pipeline status`).

    Keys are `production` (route 0) and `candidate` (route 1, when the deployment is in canary mode);
    only `target:` routes name a version that traces can be matched on.
    """
    spec = spec or CanarySpec()
    with store.reading() as session:
        row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == deployment))
        routes = (row.spec or {}).get("routes", []) if row is not None else []
        mode = (row.spec or {}).get("mode") if row is not None else None
    if not routes:
        raise NotFoundError(f"no deployment '{deployment}'")
    names = ["production", "candidate"] if mode == "canary" else ["production"]
    refs = {
        arm: resolve_version(store, route["target"])
        for arm, route in zip(names, routes, strict=False)
        if route.get("target")
    }
    if "production" not in refs:
        return {}
    threshold = latency_threshold(store, deployment, refs["production"], utc(since), spec)
    return {
        arm: collect(store, deployment, ref, utc(since), spec, threshold=threshold)
        for arm, ref in refs.items()
    }


def latest_decisions(
    store: Store, deployment: str, limit: int = 20, session: Session | None = None
) -> list[dict[str, Any]]:
    """The canary's latest decisions on a deployment, newest first (the dashboard's deployment page,
    which passes the `session` its other reads use)."""
    audit = AuditRow.__table__.c  # Core columns: plain rows, no ORM objects to build
    with store.reading(session) as s:
        rows = (
            s.connection()
            .execute(
                select(audit.at, audit.actor, audit.action, audit.after)
                .where(audit.subject == audit_subject(deployment), audit.action.in_(DECISION_ACTIONS))
                .order_by(audit.id.desc())
                .limit(limit)
            )
            .all()
        )
        return [{"at": r.at, "actor": r.actor, "action": r.action, **(r.after or {})} for r in rows]
