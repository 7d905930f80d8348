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
    port: Annotated[int | None, typer.Option(help="port (default: gateway.port)")] = None,
) -> None:
    """Serve the OpenAI-compatible gateway; SIGTERM drains requests, flushes traces and stops workers."""
    from corral.gateway import serve as run

    settings = common.settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = (
        ", ".join(sorted(settings.deployments))
        or "none yet (add them under `deployments:` or PUT /admin/deployments)"
    )
    common.console.print(
        f"corral gateway on http://{host or settings.gateway.host}:{port or settings.gateway.port}/v1 — models: {names}"
    )
    with _online_evaluation(settings):
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


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
