"""The rollout stages: canary the staging candidate against production, promote or roll back on its
verdict, then drain and retire the version it replaced."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.errors import NotFoundError
from corral.pipeline.context import GateRejected, StageContext
from corral.pipeline.training import STAGING

PROMOTED, ROLLED_BACK = "promoted", "rolled_back"
PRODUCTION = "production"


def canary(ctx: StageContext) -> dict[str, Any]:
    from corral.pipeline.canary import CanarySpec, run_canary

    spec = CanarySpec.from_mapping(dict(ctx.spec.canary))
    candidate, production = ctx.output("register")["number"], ctx.output("collect")["production_version"]
    started = datetime.now(UTC).isoformat()
    base = {
        "candidate": f"{ctx.spec.model}@{candidate}",
        "production": ctx.output("collect")["production"],
        "deployment": ctx.spec.deployment,
        "since": started,
    }
    decisions: list[dict[str, Any]] = []

    def on_decision(decision: dict[str, Any]) -> None:
        decisions.append(dict(decision))
        ctx.runs.update_output(ctx.run.id, "canary", {**base, "decisions": decisions})
        ctx.say(f"canary: {_describe(decision)}")

    extra: dict[str, Any] = {"sleep": ctx.sleep} if ctx.sleep is not None else {}
    result = run_canary(
        ctx.registry,
        deployment=ctx.spec.deployment,
        model=ctx.spec.model,
        candidate=candidate,
        production=production,
        spec=spec,
        on_decision=on_decision,
        **extra,
    )
    return {
        **base,
        "outcome": result.outcome,
        "decisions": list(result.decisions) or decisions,
        "old_version_stage": result.old_version_stage,
    }


def _describe(decision: dict[str, Any]) -> str:
    share = decision.get("share")
    reasons = "; ".join(str(r) for r in decision.get("reasons") or [])
    return (
        f"{decision.get('action', 'decision')}"
        + (f" at {share:g}%" if share is not None else "")
        + (f" ({reasons})" if reasons else "")
    )


def promote(ctx: StageContext) -> dict[str, Any]:
    """Make the canary's outcome true in the registry, whether or not the controller already did."""
    outcome = ctx.output("canary")["outcome"]
    models, name = ctx.registry.models, ctx.spec.model
    candidate = ctx.output("register")["number"]
    reason = f"pipeline {ctx.spec.name} run {ctx.run.id[:8]}: canary {outcome}"
    if outcome == PROMOTED and models.resolve(f"{name}@{PRODUCTION}").version != candidate:
        models.set_alias(name, PRODUCTION, candidate, reason=reason)
    _clear_staging(ctx, candidate, reason)
    production = models.resolve(f"{name}@{PRODUCTION}").ref
    output = {"outcome": outcome, "production": production}
    if outcome != PROMOTED:
        raise GateRejected(f"{name}@{candidate} was rolled back by its canary; {production} stays", output)
    ctx.say(f"promoted: {production} is {PRODUCTION}")
    return output


def _clear_staging(ctx: StageContext, candidate: int, reason: str) -> None:
    try:
        if ctx.registry.models.resolve(f"{ctx.spec.model}@{STAGING}").version == candidate:
            ctx.registry.models.remove_alias(ctx.spec.model, STAGING, reason=reason)
    except NotFoundError:
        pass  # the controller cleared it already


def retire(ctx: StageContext) -> dict[str, Any]:
    """Drain the replaced version (no gateway replica has a request on it) and retire it."""
    old = ctx.output("collect")["production"]
    models = ctx.registry.models
    version = models.resolve(old)
    if version.stage not in ("draining", "retired"):  # the canary controller usually began it already
        version = models.retire(old, purge=ctx.spec.retire.purge)
    deadline = datetime.now(UTC) + timedelta(seconds=ctx.spec.retire.drain_timeout_s)
    sleep = ctx.sleep or time.sleep
    while version.stage == "draining" and datetime.now(UTC) < deadline:
        sleep(0.5)
        version = models.complete_retirement(old)
    ctx.say(f"{old}: {version.stage}")
    return {"version": old, "lifecycle": version.stage}
