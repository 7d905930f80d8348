"""The canary controller: moves a candidate's share through its steps, decides at each check, promotes or rolls back.

I/O stays here; the decision is `verdict` (pure, in `canary_verdict`), the statistics `canary_stats`.
The candidate's share lives in the deployment store (canary mode: route 0 is production, route 1 the
candidate with its percentage, sticky by user), which every gateway replica picks up within its poll
interval. Every decision, with its numbers, is an audit row (`canary.*` on `deployment:NAME`), so a
killed controller resumes where it was (same start time, same step) and the dashboard shows them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from corral.artifacts import ArtifactStore
from corral.config import Deployment
from corral.errors import ConflictError, CorralError, NotFoundError
from corral.gateway.deployments import DeploymentStore
from corral.pipeline.canary_arms import (
    Threshold,
    arm_stats,
    audit_subject,
    collect,
    latency_threshold,
    latest_decisions,
)
from corral.pipeline.canary_verdict import ArmStats, CanarySpec, Margins, Verdict, verdict
from corral.registry import Registry
from corral.registry.audit import record
from corral.registry.models import ModelRegistry
from corral.store import Store
from corral.store.models import AuditRow, DeploymentRow

log = logging.getLogger("corral.pipeline.canary")
ACTOR = "corral-canary"
ENDED = ("canary.promote", "canary.rollback")


@dataclass(frozen=True)
class CanaryResult:
    """How a canary ended (`promoted` or `rolled_back`), every decision it took, and the old version's stage."""

    outcome: str
    decisions: list[dict[str, Any]] = field(default_factory=list)
    old_version_stage: str | None = None  # production (rolled back), draining or retired (promoted)


@dataclass
class _Run:
    """A canary in progress: what it started from, when, and where it is."""

    deployment: str
    model: str
    production: str  # model@N
    candidate: str
    original: dict[str, Any]  # the deployment spec before the canary, restored on rollback
    original_source: str
    started: float
    step: int = 0
    step_started: float = 0.0


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _models(store: Store | Registry, actor: str) -> tuple[Store, ModelRegistry]:
    if isinstance(store, Registry):
        return store.store, store.as_actor(actor).models
    # Without a registry the artifact store is never touched: the controller neither reads files nor purges.
    return store, ModelRegistry(store, ArtifactStore("memory://corral-canary"), actor)


def _write(store: Store, name: str, spec: dict[str, Any], source: str, actor: str) -> None:
    """Store a deployment spec (validated like an admin change), keeping the row's source as given."""
    DeploymentStore(store).put(name, spec, actor)
    with store.session() as session:
        row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == name))
        if row is not None and row.source != source:
            row.source = source


def _canary_spec(run: _Run, share: float) -> dict[str, Any]:
    base = Deployment.model_validate(run.original)
    route0 = base.routes[0]
    candidate = route0.model_copy(update={"target": run.candidate, "weight": float(share)})
    spec = base.model_copy(update={"mode": "canary", "routes": [route0, candidate]})
    return spec.model_dump(mode="json")


def _final_spec(run: _Run) -> dict[str, Any]:
    """After a promotion: the original spec, its route retargeted if it named the old version itself."""
    base = Deployment.model_validate(run.original)
    routes = [
        r.model_copy(update={"target": run.candidate}) if r.target == run.production else r
        for r in base.routes
    ]
    return base.model_copy(update={"routes": routes}).model_dump(mode="json")


def _audit(store: Store, run: _Run, action: str, after: dict[str, Any], actor: str) -> dict[str, Any]:
    with store.session() as session:
        record(session, actor, action, audit_subject(run.deployment), None, after)
    return {"action": action.removeprefix("canary."), **after}


def _decision(row: AuditRow) -> dict[str, Any]:
    return {"action": row.action.removeprefix("canary."), **(row.after or {})}


def _last_canary(store: Store, deployment: str) -> list[AuditRow]:
    """The audit rows of the latest canary on this deployment, oldest first (none: empty)."""
    subject = AuditRow.subject == audit_subject(deployment)
    with store.session() as session:
        start = session.scalars(
            select(AuditRow)
            .where(subject, AuditRow.action == "canary.start")
            .order_by(AuditRow.id.desc())
            .limit(1)
        ).first()
        if start is None:
            return []
        return list(
            session.scalars(
                select(AuditRow)
                .where(subject, AuditRow.action.like("canary.%"), AuditRow.id >= start.id)
                .order_by(AuditRow.id)
            ).all()
        )


def _begin(
    store: Store, models: ModelRegistry, *, deployment: str, model: str, candidate: int, production: int,
    share: float, clock: Callable[[], float], actor: str, replay: bool,
) -> tuple[_Run, list[dict[str, Any]], str | None]:  # fmt: skip
    """The run to go on with, the decisions taken so far, and the ending already reached (if any)."""
    prod_ref, cand_ref = f"{model}@{production}", f"{model}@{candidate}"
    with store.session() as session:
        row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == deployment))
        if row is None or row.spec is None:
            raise NotFoundError(f"no deployment '{deployment}'")
        stored, source = dict(row.spec), row.source
    rows = _last_canary(store, deployment)
    first = (rows[0].after or {}) if rows else {}
    if first.get("candidate") == cand_ref and first.get("production") == prod_ref:
        ended = rows[-1].action if rows[-1].action in ENDED else None
        if ended is None or replay:
            last = rows[-1].after or {}
            step = int(last.get("step_index", 0)) + (rows[-1].action == "canary.advance")
            run = _Run(deployment, model, prod_ref, cand_ref, first["original"], first["source"],
                       first["started"], step, clock())  # fmt: skip
            log.info("%s the canary of %s on %s", "replaying" if ended else "resuming", cand_ref, deployment)
            return run, [_decision(r) for r in rows] if ended else [], ended
    live = models.resolve(f"{model}@production")
    if live.version != production:
        raise ConflictError(f"{model}@production is version {live.version}, not {production}")
    if models.resolve(cand_ref).stage in ("draining", "retired"):
        raise ConflictError(f"{cand_ref} cannot serve: it is {models.resolve(cand_ref).stage}")
    routes = stored.get("routes", [])
    if len(routes) != 1 or routes[0].get("target") not in (f"{model}@production", prod_ref):
        raise ConflictError(
            f"deployment '{deployment}' must have one route to {model}@production to start a canary",
            hint=f"it has {len(routes)} route(s); set it to `routes: [{{target: {model}@production}}]`",
        )
    now = clock()
    run = _Run(deployment, model, prod_ref, cand_ref, stored, source, now, 0, now)
    start = {"candidate": cand_ref, "production": prod_ref, "started": now, "original": stored, "source": source,
             "step_index": 0, "share": share, "reasons": [f"{cand_ref} starts at {share:g}% against {prod_ref}"],
             "numbers": {}}  # fmt: skip
    return run, [_audit(store, run, "canary.start", start, actor)], None


def run_canary(
    store: Store | Registry,
    *,
    deployment: str,
    model: str,
    candidate: int,
    production: int,
    spec: CanarySpec,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    on_decision: Callable[[dict[str, Any]], None] | None = None,
    actor: str = ACTOR,
    replay_finished: bool = True,
) -> CanaryResult:
    """Canary `model@candidate` against `model@production` on `deployment` until it is promoted or rolled back.

    `store` is the store, or a Registry (needed only for a purge that someone asked for at retirement).
    The latest canary of the same pair resumes from its audit rows when it was interrupted; when it had
    finished, its ending is made true again (idempotently) and returned, unless `replay_finished` is off.
    """
    sql, models = _models(store, actor)
    run, decisions, ended = _begin(sql, models, deployment=deployment, model=model, candidate=candidate,
                                   production=production, share=spec.steps[0], clock=clock, actor=actor,
                                   replay=replay_finished)  # fmt: skip
    if ended == "canary.promote":
        return CanaryResult("promoted", decisions, _promote(sql, models, run, spec, sleep, clock, actor))
    if ended == "canary.rollback":
        _rollback(sql, models, run, actor)
        return CanaryResult("rolled_back", decisions, models.resolve(run.production).stage)
    for decision in decisions:
        _emit(on_decision, decision)
    _write(sql, deployment, _canary_spec(run, spec.share(run.step)), "admin", actor)
    threshold = Threshold(None, "none")
    while True:
        sleep(spec.check_interval_s)
        now = clock()
        if threshold.ms is None and spec.margins.latency_p95 is not None:
            threshold = latency_threshold(sql, deployment, run.production, _moment(run.started), spec)
        arms = [
            collect(sql, deployment, ref, _moment(run.started), spec, threshold=threshold,
                    step_since=_moment(run.step_started))
            for ref in (run.production, run.candidate)
        ]  # fmt: skip
        v = verdict(arms[0], arms[1], spec, now - run.started, run.step)
        decision = _decide(sql, run, v, threshold, actor)
        decisions.append(decision)
        _emit(on_decision, decision)
        if v.action == "advance":
            run.step, run.step_started = run.step + 1, now
            _write(sql, deployment, _canary_spec(run, spec.share(run.step)), "admin", actor)
        elif v.action == "promote":
            stage = _promote(sql, models, run, spec, sleep, clock, actor)
            return CanaryResult("promoted", decisions, stage)
        elif v.action == "rollback":
            _rollback(sql, models, run, actor)
            return CanaryResult("rolled_back", decisions, models.resolve(run.production).stage)


def _emit(on_decision: Callable[[dict[str, Any]], None] | None, decision: dict[str, Any]) -> None:
    if on_decision is not None:
        on_decision(decision)


def _decide(store: Store, run: _Run, v: Verdict, threshold: Threshold, actor: str) -> dict[str, Any]:
    numbers = {
        **v.numbers,
        "latency_threshold_ms": threshold.ms,
        "latency_threshold_source": threshold.source,
    }
    after = {"candidate": run.candidate, "production": run.production, "step_index": run.step,
             "share": numbers["share"], "reasons": list(v.reasons), "numbers": numbers}  # fmt: skip
    log.info("canary %s on %s: %s (%s)", run.candidate, run.deployment, v.action, "; ".join(v.reasons))
    return _audit(store, run, f"canary.{v.action}", after, actor)


def _promote(
    store: Store, models: ModelRegistry, run: _Run, spec: CanarySpec,
    sleep: Callable[[float], None], clock: Callable[[], float], actor: str,
) -> str | None:  # fmt: skip
    """`production` to the candidate, the deployment back to one route, the old version drained and retired."""
    candidate = int(run.candidate.rpartition("@")[2])
    models.set_alias(run.model, "production", candidate, reason=f"canary on {run.deployment} promoted")
    _clear_staging(models, run)
    final = _final_spec(run)
    # A spec that differs from the file's must stay an admin change, or a restart would seed the file's back.
    _write(store, run.deployment, final, run.original_source if final == run.original else "admin", actor)
    version = models.resolve(run.production)
    if version.stage == "retired":
        return version.stage
    try:
        version = models.retire(run.production)
    except ConflictError as exc:  # another alias still points at it: it keeps serving that alias
        log.warning("%s stays live: %s", run.production, exc)
        return models.resolve(run.production).stage
    deadline = clock() + spec.drain_timeout_s
    while version.stage == "draining" and clock() < deadline:
        sleep(min(spec.check_interval_s, 5.0))
        version = models.complete_retirement(run.production)
    if version.stage == "draining":
        log.info("%s is still draining; the gateway retires it once nothing is in flight", run.production)
    return version.stage


def _rollback(store: Store, models: ModelRegistry, run: _Run, actor: str) -> None:
    """The deployment as it was before the canary (the candidate's share gone) and `staging` cleared."""
    _write(store, run.deployment, run.original, run.original_source, actor)
    _clear_staging(models, run)


def _clear_staging(models: ModelRegistry, run: _Run) -> None:
    try:
        if models.resolve(f"{run.model}@staging").ref == run.candidate:
            models.remove_alias(run.model, "staging", reason=f"canary on {run.deployment} ended")
    except CorralError:
        pass  # no staging alias


__all__ = [
    "ArmStats",
    "CanaryResult",
    "CanarySpec",
    "Margins",
    "Verdict",
    "arm_stats",
    "latest_decisions",
    "run_canary",
    "verdict",
]
