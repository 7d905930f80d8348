"""A lean HTTP/1.1 client for upstream calls: pooled keep-alive connections, llhttp (httptools) parsing.

Under load aiohttp's client was the largest part of the gateway's CPU (37% of the event loop's
thread at 5k requests/s), most of it machinery an upstream call does not use: cookies, redirects,
multipart, tracing signals, per-request timer objects. An upstream call is one POST with a JSON body
and an answer read whole or streamed: here that is one write, one parse of each received packet in C,
and one wake-up of the caller when the head (usually with the whole body) is in.

Timeouts follow aiohttp's `sock_connect`/`sock_read`: connecting is bounded separately, and every wait
for the next bytes of an answer is bounded by the call's timeout (a slow stream that keeps dripping
is the proxy's whole-request limit's business).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import time
import urllib.parse
from typing import Any

from corral.gateway.h1conn import Connection, Disconnected, Origin, ProtocolError, Response, wait

__all__ = ["Disconnected", "Pool", "ProtocolError", "Response", "split_url"]

# Requests sent again on a fresh connection when a reused one closes unanswered (as aiohttp, Go, urllib3):
# the upstream may have read and run the request before closing, so a POST is never resent here.
REPLAYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


@functools.lru_cache(maxsize=1024)
def split_url(url: str) -> tuple[Origin, bytes]:
    """(origin, request target) of an http(s) URL; ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]  # credentials in a URL are never sent
    host, port = authority, 443 if scheme == "https" else 80
    if authority.startswith("["):  # [IPv6]:port
        host, _, tail = authority[1:].partition("]")
        if tail.startswith(":"):
            port = _port(tail[1:], url)
    elif ":" in authority:
        host, _, text = authority.rpartition(":")
        port = _port(text, url)
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    target = (slash + path).partition("#")[0] or "/"  # a fragment is never sent
    # spaces, line breaks and non-ASCII are %-escaped (as aiohttp's yarl did): raw, they break the request line
    return Origin(scheme, host, port), urllib.parse.quote(target, safe="!$%&'()*+,/:;=?@[]~").encode()


def _port(text: str, url: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in URL {url!r}")
    return int(text)


def _host_header(origin: Origin) -> bytes:
    default = 443 if origin.scheme == "https" else 80
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return (host if origin.port == default else f"{host}:{origin.port}").encode()


class Pool:
    """Keep-alive connections to every origin, opened on demand, at most `max_connections` in all."""

    def __init__(self, max_connections: int = 1000, keepalive_s: float = 60.0) -> None:
        self.max_connections = max(1, max_connections)
        self.keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None
        self._reaper: asyncio.TimerHandle | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def request(
        self, method: bytes, url: str, headers: bytes, body: bytes, timeout_s: float
    ) -> Response:
        """Send and return the answer with its head read. `headers`: pre-encoded `Name: value\\r\\n` lines.

        Raises OSError (ConnectionError, ProtocolError) when connecting or reading fails and
        TimeoutError when the upstream is silent past `timeout_s`. A kept-alive connection that turns
        out closed before any answer byte (the upstream timed it out) is replaced once for an idempotent
        method only: the upstream may have handled the request before closing.
        """
        origin, target = split_url(url)
        request = b"".join(
            (
                method, b" ", target, b" HTTP/1.1\r\nHost: ", _host_header(origin), b"\r\n", headers,
                b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
            )
        )  # fmt: skip
        for fresh_only in (False, True):
            conn = await self._acquire(origin, timeout_s, reuse=not fresh_only)
            replay = conn.served > 0 and method in REPLAYABLE
            try:
                return await wait(conn.send(request, timeout_s), timeout_s)
            except Disconnected:
                conn.close()
                if not replay or conn.received:
                    raise
            except BaseException:
                conn.close()
                raise
        raise Disconnected("the upstream closed the connection before answering")  # pragma: no cover

    def _reuse(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and now - conn.idle_since < self.keepalive_s:
                return conn
            conn.close()
        return None

    async def _acquire(self, origin: Origin, timeout_s: float, reuse: bool) -> Connection:
        """An idle connection to `origin`, else a new one, waiting for a slot while at the cap."""
        while True:
            conn = self._reuse(origin) if reuse else None
            if conn is not None:
                return conn
            if len(self._open) < self.max_connections or self._close_oldest_idle():
                return await self._connect(origin, timeout_s)
            slot = asyncio.get_running_loop().create_future()
            self._slots.append(slot)
            try:
                await wait(slot, timeout_s, f"no upstream connection came free in {timeout_s:g} s")
            except BaseException:
                if slot.done() and not slot.cancelled() and slot.exception() is None:
                    self._free_slot()  # woken, then cancelled before it ran: the next caller's turn
                raise
            finally:
                if slot in self._slots:
                    self._slots.remove(slot)

    async def _connect(self, origin: Origin, timeout_s: float) -> Connection:
        conn = Connection(self, origin)
        self._open.add(conn)
        tls: dict[str, Any] = {}
        if origin.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = {"ssl": self._ssl, "server_hostname": origin.host}
        try:
            # connecting is bounded on its own so that a dead host fails fast and the fallback gets its turn
            async with asyncio.timeout(min(5.0, timeout_s)):
                await asyncio.get_running_loop().create_connection(
                    lambda: conn, origin.host, origin.port, **tls
                )
        except TimeoutError:
            conn.close()
            raise TimeoutError(f"connecting to {origin.host}:{origin.port} timed out") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _close_oldest_idle(self) -> bool:
        oldest: Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    def put(self, conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._free_slot()
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.keepalive_s, self._reap)

    def _reap(self) -> None:
        """Close connections idle past the keep-alive, also for origins no call asks for any more."""
        self._reaper = None
        now, oldest = time.monotonic(), None
        for origin, idle in list(self._idle.items()):
            while idle and now - idle[0].idle_since >= self.keepalive_s:  # oldest first
                idle.pop(0).close()
            if idle:
                oldest = idle[0].idle_since if oldest is None else min(oldest, idle[0].idle_since)
            else:
                del self._idle[origin]
        if oldest is not None:
            delay = max(0.0, oldest + self.keepalive_s - now)
            self._reaper = asyncio.get_running_loop().call_later(delay, self._reap)

    def forget(self, conn: Connection) -> None:
        """A closed connection leaves the pool (and frees a slot for a caller waiting on the cap)."""
        if conn in self._open:
            self._open.discard(conn)
            idle = self._idle.get(conn.origin)
            if idle and conn in idle:
                idle.remove(conn)
            self._free_slot()

    def _free_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
