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
    monitor = _start_monitor(parts.store, settings) if settings.monitor.enabled else None
    try:
        serve_forever(gateway, host or settings.gateway.host, port or settings.gateway.port)
    finally:
        if monitor is not None:
            monitor.set()
        if reloader is not None:
            reloader.stop()
        supervisor.stop()
        logging.getLogger("corral.gateway").info("gateway stopped; traces flushed, workers stopped")


def _start_monitor(store: Any, settings: Settings) -> Any:
    """The monitor loop (rollups, drift, alerts) on a thread, on whichever replica holds its lease.

    It imports and builds the monitor only after its first interval, so start-up pays nothing for it.
    Returns the event that stops it.
    """
    import logging
    import threading

    stop = threading.Event()

    def run() -> None:
        if stop.wait(settings.monitor.interval_s):
            return
        from corral.artifacts import ArtifactStore
        from corral.monitor import MonitorService
        from corral.monitor.offload import RollupProcess
        from corral.registry import Registry

        registry: Registry | None = None
        if settings.monitor.drift_reference_datasets:  # only drift against a dataset reads artifacts
            try:
                registry = Registry(store, ArtifactStore.from_settings(settings), actor="monitor")
            except Exception:  # noqa: BLE001 - the monitor still runs; those drift reports log why they fail
                logging.getLogger("corral.monitor").exception(
                    "cannot open the artifacts for drift references"
                )
        rollups = RollupProcess(store.url, settings.monitor.lookback_s, store.statement_timeout_s)
        try:
            MonitorService(store, settings.monitor, registry=registry, rollups=rollups).run_until(stop)
        finally:
            rollups.close()

    threading.Thread(target=run, name="corral-monitor", daemon=True).start()
    return stop


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
