"""Client connections under uvicorn: a header size cap, header and body read timeouts, a connection cap,
and writes coalesced per event-loop turn.

uvicorn times out idle keep-alive connections only: a client that drips its headers or its body
holds a socket (and its buffers) for ever, and enough of them exhaust the file limit. Each guard
answers the way a reverse proxy would (431, 408, or closing a connection over the cap).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("corral.gateway")
RESERVED_FDS = 64  # files kept free for the store, logs, spool and workers


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


def _answer(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


HEADERS_TOO_LARGE = _answer(b"431 Request Header Fields Too Large")
TIMED_OUT = _answer(b"408 Request Timeout")


class CoalescingTransport:
    """A transport whose writes in one turn of the event loop leave in one send.

    uvicorn writes a response's head and its body separately: two system calls and two TCP segments
    (with TCP_NODELAY) for every answer, and two reads for the client. Held for one loop turn at most,
    they go out together; anything else is the real transport's.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = sum(len(p) for p in self._pending) if self._pending else 0
        return int(self._transport.get_write_buffer_size()) + held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedProtocol:
    """Mixed in before uvicorn's HTTP protocol class (h11 or httptools); see `guarded`."""

    config: Any
    connections: set[Any]
    cycle: Any
    transport: Any
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: Any) -> None:
        limits: ConnectionLimits = self.config.corral_limits
        self._limits = limits
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = len(self.connections) >= limits.max_connections
        if self._refused:  # closing at once keeps the socket (a file) from being held
            transport.close()
            return
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[misc]
        self._arm(limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self._refused:
            super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        waiting = self._awaiting_headers()
        if waiting:
            if self._timer is None:  # the first bytes of the next request on a kept-alive connection
                self._head_bytes = 0
                self._arm(self._limits.header_timeout_s)
            self._head_bytes += len(data)
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            return
        if self._awaiting_headers():
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse(HEADERS_TOO_LARGE)
        elif waiting:  # headers complete: the body gets its own deadline, if there is a body to wait for
            self._disarm()
            if self.cycle.more_body:
                self._arm(self._limits.body_timeout_s)
        elif self._timer is not None and not self.cycle.more_body:
            self._disarm()

    def _awaiting_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._awaiting_headers() or (self.cycle.more_body and not self.cycle.response_started):
            self._refuse(TIMED_OUT)

    def _refuse(self, answer: bytes) -> None:
        self._disarm()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(answer)
        self.transport.close()


def guarded(base: type) -> type:
    """uvicorn's protocol class `base` with the guards above."""
    return type(f"Guarded{base.__name__}", (GuardedProtocol, base), {})


def raise_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit (as servers do); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def client_connection_cap(wanted: int, upstream_connections: int) -> int:
    """The client connections to allow: what settings ask, within the files left after upstream ones."""
    room = raise_file_limit() - upstream_connections - RESERVED_FDS
    cap = max(16, min(wanted, room))
    if cap < wanted:
        log.warning(
            "accepting at most %d client connections (the open-file limit leaves no room for %d); "
            "raise `ulimit -n` or lower gateway.max_connections",
            cap,
            wanted,
        )
    return cap
