"""The OpenAI-compatible gateway: routing, keys, limits, costs, tracing, metrics."""

from __future__ import annotations

from typing import Any

from corral.config import Settings
from corral.gateway.app import Gateway
from corral.gateway.auth import KeyStore
from corral.gateway.parts import Parts, build_parts, build_stages
from corral.gateway.routing import Breaker, attempt_plan, choose_route, least_loaded, sticky_bucket
from corral.gateway.stages import Answer, Call, Retry, Stage
from corral.gateway.tracing import TraceWriter


def create_gateway(
    settings: Settings | None = None, *, stages: list[Stage] | None = None, **build: Any
) -> Gateway:
    """A gateway ASGI app for these settings (default: corral.yaml and CORRAL_* variables).

    Serve it with any ASGI server (`uvicorn.run(create_gateway())`) or `corral serve`; `build` takes
    the keyword arguments of `build_parts` (store, registry, workers, local_workers).
    """
    if settings is None:
        from corral.config import load_settings

        settings = load_settings()
    return Gateway(build_parts(settings, **build), stages=stages)


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """`corral serve`: local workers for `target:` routes, then the gateway, until SIGTERM drains both."""
    import logging

    from corral.gateway.deployments import check_targets
    from corral.gateway.parts import supervisor_of
    from corral.gateway.reload import watch_config
    from corral.gateway.server import serve_forever

    parts = build_parts(settings, local_workers=True)
    parts.store.ensure_ready()  # a bad target is a clear error before any socket opens
    check_targets(settings.deployments, parts.registry.models.resolve, settings.source or "settings")
    supervisor = supervisor_of(parts)
    gateway = Gateway(parts, tune_gc=True)
    reloader = watch_config(parts)
    supervisor.start()
    try:
        serve_forever(gateway, host or settings.gateway.host, port or settings.gateway.port)
    finally:
        if reloader is not None:
            reloader.stop()
        supervisor.stop()
        logging.getLogger("corral.gateway").info("gateway stopped; traces flushed, workers stopped")


__all__ = [
    "Answer",
    "Breaker",
    "Call",
    "Gateway",
    "KeyStore",
    "Parts",
    "Retry",
    "Stage",
    "TraceWriter",
    "attempt_plan",
    "build_parts",
    "build_stages",
    "choose_route",
    "create_gateway",
    "least_loaded",
    "serve",
    "sticky_bucket",
]
