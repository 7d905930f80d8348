"""`corral serve`: the gateway and its local workers, as configured in corral.yaml."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from corral.cli import common


def serve(
    host: Annotated[str | None, typer.Option(help="interface to listen on (default: gateway.host)")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="port, 1-65535 (default: gateway.port)")
    ] = None,
) -> None:
    """Serve the OpenAI-compatible gateway; SIGTERM drains requests, flushes traces and stops workers."""
    from corral.gateway import serve as run
    from corral.gateway.server import bind

    settings = common.settings()
    host, port = host or settings.gateway.host, port or settings.gateway.port
    bind(host, port).close()  # a port in use is one clear line before any worker starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the deployments (from corral.yaml and the admin API alike) are listed once the store is read:
    # the "gateway ready" line names them all
    common.console.print(f"corral gateway on http://{host}:{port}/v1")
    with _online_evaluation(settings), _pipeline_triggers(settings):
        run(settings, host, port)


@contextmanager
def _online_evaluation(settings: Any) -> Iterator[None]:
    """Score live traces in the background when `evaluate.online` has rules (one replica does, by lease)."""
    if not settings.evaluate.online:
        yield
        return
    from corral.evaluate.online import running

    with running(settings, common.registry()):
        yield


@contextmanager
def _pipeline_triggers(settings: Any) -> Iterator[None]:
    """Start the `pipeline.files` on their schedules and alerts (one replica does, by lease)."""
    if not (settings.pipeline.enabled and settings.pipeline.files):
        yield
        return
    from pathlib import Path

    from corral.pipeline.triggers import PipelineScheduler
    from corral.store import Store

    source = Path(settings.source).resolve() if settings.source else None
    store = Store.from_settings(settings)
    scheduler = PipelineScheduler(
        store,
        settings.pipeline,
        base_dir=source.parent if source else Path.cwd(),
        config_path=str(source) if source else None,
    )
    scheduler.start()
    try:
        yield
    finally:
        scheduler.stop()
        store.dispose()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
