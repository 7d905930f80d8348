"""Running a gateway under uvicorn: in the foreground (`corral serve`) or on a background thread."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn

from corral.config import GatewaySettings
from corral.errors import ConflictError, CorralError, InvalidInputError
from corral.gateway.connections import ConnectionLimits, client_connection_cap, guarded

log = logging.getLogger("corral.gateway")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with getsockname)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise bind_error(host, port, exc) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_error(host: str, port: int, exc: BaseException) -> CorralError:
    """What to tell someone whose gateway cannot listen on host:port."""
    where = f"{host}:{port}"
    hint = "choose another with --port or gateway.port"
    if isinstance(exc, OverflowError) or not 0 <= port <= 65535:
        return InvalidInputError(f"port {port} is not a port number (1-65535)", hint=hint)
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return ConflictError(
            f"cannot listen on {where}: the port is already in use", hint=f"stop the other server, or {hint}"
        )
    if code == errno.EACCES:
        return InvalidInputError(
            f"cannot listen on {where}: permission denied (ports below 1024 need privileges)", hint=hint
        )
    if code == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return InvalidInputError(
            f"cannot listen on {where}: no such local address", hint="check --host or gateway.host"
        )
    return CorralError(f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}")


def uvicorn_config(app: Any, settings: GatewaySettings, log_level: str = "warning") -> uvicorn.Config:
    loop = "uvloop" if _has("uvloop") else "asyncio"
    if _has("httptools"):
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base  # type: ignore[assignment]
    header_bytes = int(settings.max_header_kb * 1024)
    config = uvicorn.Config(
        app,
        loop=loop,
        http=guarded(base),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # nothing reads the client address; one ASGI layer less per request
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout_s)),
        timeout_keep_alive=30,
        backlog=2048,
        h11_max_incomplete_event_size=header_bytes + 256 * 1024,  # our own cap answers first, with 431
    )
    config.corral_limits = ConnectionLimits(  # type: ignore[attr-defined]
        max_header_bytes=header_bytes,
        header_timeout_s=settings.client_header_timeout_s,
        body_timeout_s=settings.client_body_timeout_s,
        max_connections=client_connection_cap(settings.max_client_connections, settings.max_connections),
    )
    return config


class QuietServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM/SIGINT end it cleanly instead of being re-raised after."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@dataclass
class RunningGateway:
    gateway: Any  # a corral.gateway.Gateway (not imported: app.py imports nothing that imports it)
    server: QuietServer
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL to give clients."""
        return f"{self.base_url}/v1"


@contextmanager
def serve_in_thread(gateway: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningGateway]:
    """Serve on a background thread until the block ends; the gateway is started and stopped with it."""
    sock = bind(host, port)
    server = QuietServer(uvicorn_config(gateway, gateway.settings.gateway))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)

    thread = threading.Thread(target=run, name="corral-gateway", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.02)
    if not server.started:
        sock.close()
        raise RuntimeError(f"the gateway did not start: {errors[0] if errors else 'see the log'}")
    try:
        yield RunningGateway(gateway, server, host, sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(gateway.settings.gateway.drain_timeout_s + 15)
        sock.close()


def serve_forever(gateway: Any, host: str, port: int) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; then drain, flush traces and return."""
    sock = bind(host, port)
    server = QuietServer(uvicorn_config(gateway, gateway.settings.gateway, "info"))
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(server.serve(sockets=[sock]))
        else:
            uvloop.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
