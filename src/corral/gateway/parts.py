"""The gateway's parts, built by one function that `corral serve`, the quickstart and the tests all call."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.config import Settings
from corral.gateway.accounting import Cost, Trace
from corral.gateway.auth import KeyRing, KeyStore
from corral.gateway.deployments import DeploymentStore, RouteResolver, WorkerDirectory, cached_model_dir
from corral.gateway.guardrails import Guard
from corral.gateway.heartbeat import Heartbeat
from corral.gateway.intake import BodyChecks, Deployment, Keys, Limits, PromptTemplates
from corral.gateway.limits import Limiter
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.routes import RouteTable, VersionCounts
from corral.gateway.routing import Breaker
from corral.gateway.stages import Stage
from corral.gateway.tracing import TraceWriter
from corral.gateway.upstream import KeyEnvPolicy, UpstreamPool
from corral.store import Store

if TYPE_CHECKING:
    from corral.registry import Registry


@dataclass(frozen=True)
class Parts:
    """Everything one gateway process works with; each user takes only the parts it needs."""

    settings: Settings
    store: Store
    registry: Registry
    keys: KeyRing
    limiter: Limiter
    pool: UpstreamPool
    routes: RouteTable
    tracer: TraceWriter | None
    metrics: GatewayMetrics
    workers: WorkerDirectory | None
    heartbeat: Heartbeat  # this replica's in-flight counts, for retirements decided in other processes


WorkersFactory = Callable[[Callable[[str], int], Callable[[str], None]], WorkerDirectory]


def build_parts(
    settings: Settings,
    *,
    store: Store | None = None,
    registry: Registry | None = None,
    workers: WorkerDirectory | None = None,
    local_workers: bool = False,
) -> Parts:
    """The parts for these settings. `local_workers` starts a supervisor for `target:` routes (unstarted).

    The registry and the supervisor get the route table's in-flight count in their constructors, so a
    draining version retires (and a worker stops) only when nothing is in flight on it here.
    """
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry

    store = store or Store.from_settings(settings)
    metrics = GatewayMetrics()
    in_flight = VersionCounts()
    if registry is None:
        registry = Registry(store, ArtifactStore.from_settings(settings), "gateway", in_flight=in_flight.get)
    else:
        registry = Registry(registry.store, registry.artifacts, registry.actor, in_flight=in_flight.get)
    if local_workers:
        from corral.gateway.workers import WorkerSupervisor

        workers = WorkerSupervisor(
            settings,
            in_flight=in_flight.get,
            on_restart=lambda ref: metrics.worker_restarts.labels(ref).inc(),
            on_error=metrics.worker_error,
        )
    g = settings.gateway
    key_policy = KeyEnvPolicy.from_settings(settings)
    resolver = RouteResolver(
        registry.models.resolve,
        workers,
        lambda: Breaker(g.breaker_failures, g.breaker_reset_s),
        local_dir=lambda version: cached_model_dir(registry, version),
        key_policy=key_policy,
    )
    admin_key = os.environ.get(settings.auth.admin_key_env) or None
    return Parts(
        settings=settings,
        store=store,
        registry=registry,
        keys=KeyRing(KeyStore(store), admin_key, settings.auth.require_keys),
        limiter=Limiter(metrics, settings.redis.url, settings.auth.redis_prefix),
        pool=UpstreamPool(g.max_connections),
        routes=RouteTable(
            DeploymentStore(store, key_policy, tuple(settings.guard.policies)), resolver, in_flight
        ),
        tracer=TraceWriter(store, settings.tracing, metrics) if settings.tracing.enabled else None,
        metrics=metrics,
        workers=workers,
        heartbeat=Heartbeat(store, lambda: in_flight.counts, g.deployments_poll_s),
    )


def supervisor_of(parts: Parts) -> Any:
    """The worker supervisor these parts started with, or None (a test's directory or no local routes)."""
    from corral.gateway.workers import WorkerSupervisor

    return parts.workers if isinstance(parts.workers, WorkerSupervisor) else None


def build_stages(parts: Parts, extra: list[Stage] | None = None) -> list[Stage]:
    """The default request path for these parts; `extra` stages run after the body checks."""
    stages: list[Stage] = [
        Keys(parts.keys),
        Deployment(parts.routes, int(parts.settings.gateway.max_body_mb * 1024 * 1024)),
        Limits(parts.limiter),
        PromptTemplates(parts.registry),
        BodyChecks(),
        *([Guard(parts.settings, parts.metrics)] if parts.settings.guard.policies else []),
        *(extra or []),
        Cost(parts.metrics, parts.limiter),
    ]
    if parts.tracer is not None:
        stages.append(Trace(parts.tracer))
    return stages
