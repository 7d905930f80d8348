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
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httptools

MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers; past it the answer is refused
HIGH_WATER = 1 << 20  # body bytes buffered before reading from the socket pauses
LOW_WATER = 1 << 18


class ProtocolError(ConnectionError):
    """The upstream's answer is not HTTP/1.1 this client can read (malformed, too large a head)."""


class Disconnected(ConnectionError):
    """The upstream closed the connection before its answer was complete."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


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
    return Origin(scheme, host, port), (slash + path or "/").encode()


def _port(text: str, url: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in URL {url!r}")
    return int(text)


def _host_header(origin: Origin) -> bytes:
    default = 443 if origin.scheme == "https" else 80
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return (host if origin.port == default else f"{host}:{origin.port}").encode()


class Response:
    """An answer whose head has arrived; its body arrives through `read`/`chunks`. Release it when done."""

    __slots__ = (
        "status",
        "content_type",
        "content_length",
        "_conn",
        "_chunks",
        "_buffered",
        "_done",
        "_error",
        "_waiter",
        "_timeout_s",
        "_released",
        "_paused",
    )

    def __init__(self, conn: Connection, status: int, content_type: str, content_length: int | None) -> None:
        self.status = status
        self.content_type = content_type  # without parameters, lower case; "" when absent
        self.content_length = content_length
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout_s = conn.timeout_s
        self._released = False
        self._paused = False

    # -- fed by the connection ---------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done, self._error = True, error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller ------------------------------------------------------------------------
    async def _more(self) -> None:
        """Wait until a chunk or the end has arrived, at most the call's timeout."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._timeout_s, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _take(self) -> bytes:
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._conn.resume()
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (whatever is buffered at each wake-up, joined); raises what broke it."""
        while True:
            if self._chunks:
                yield self._take()
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._more()

    async def read_capped(self, cap: int) -> tuple[bytes, bool]:
        """(the whole body, True), or (its first bytes past `cap`, False) when it is larger."""
        if self.content_length is not None and self.content_length > cap:
            return b"", False
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(parts), False
        return (parts[0] if len(parts) == 1 else b"".join(parts)), True

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        """Back to the pool when the answer was read to its end on a kept-alive connection; else closed."""
        if self._released:
            return
        self._released = True
        self._conn.done_with(self, self._done and self._error is None and not self._chunks)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


SILENT = "the upstream sent nothing within the call's timeout"


def _expire(waiter: asyncio.Future[Any], message: str = SILENT) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(message))


class Connection(asyncio.Protocol):
    """One kept-alive connection to an origin; one request at a time."""

    def __init__(self, pool: Pool, origin: Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.served = 0  # answers completed on this connection (a reused one may have gone stale)
        self.idle_since = 0.0
        self.timeout_s = 60.0
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._content_type = b""
        self._content_length: int | None = None
        self._chunked = False
        self._head_bytes = 0
        self._refused: ProtocolError | None = None
        self._complete = False
        self._keep_alive = False
        self._received = False

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._head is None and self._response is None:  # bytes nobody asked for: not reusable
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:  # a callback's own error comes wrapped in one
            self._fail(self._refused or ProtocolError(f"the upstream's answer is not valid HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self._response
        if response is not None and not self._complete:
            if not self._chunked and self._content_length is None:
                self._complete = True  # a body that ends with the connection (HTTP/1.0 style)
                response._finish()
            else:
                response._finish(Disconnected("the upstream closed the connection mid-answer"))
        elif self._head is not None and not self._head.done():
            self._head.set_exception(Disconnected("the upstream closed the connection before answering"))

    # -- llhttp callbacks ----------------------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self._count_head(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        lower = name.lower()
        if lower == b"content-type":
            self._content_type = value
        elif lower == b"content-length":
            self._content_length = int(value) if value.strip().isdigit() else None
        elif lower == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refused = ProtocolError(
                f"the upstream's answer has over {MAX_HEAD_BYTES // 1024} KiB of headers"
            )
            raise self._refused

    def on_headers_complete(self) -> None:
        content_type = self._content_type.partition(b";")[0].strip().lower().decode("latin-1")
        response = Response(self, self._parser.get_status_code(), content_type, self._content_length)
        self._response = response
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # read now: the parser resets after this
        if self._response is not None:
            self._response._finish()

    # -- used by the pool and the response -------------------------------------------------------------
    def send(self, request: bytes, timeout_s: float) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.timeout_s = timeout_s
        self._response, self._complete, self._keep_alive, self._received = None, False, False, False
        self._content_type, self._content_length, self._chunked, self._head_bytes = b"", None, False, 0
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._head

    @property
    def received(self) -> bool:
        return self._received

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def done_with(self, response: Response, whole: bool) -> None:
        self._response = None
        if whole and self._complete and self._keep_alive and not self.closed:
            self.served += 1
            self.pool.put(self)
        else:
            self.close()

    def _fail(self, error: BaseException) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        elif self._response is not None:
            self._response._finish(error)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Keep-alive connections to every origin, opened on demand, at most `max_connections` in all."""

    def __init__(self, max_connections: int = 1000, keepalive_s: float = 60.0) -> None:
        self.max_connections = max(1, max_connections)
        self.keepalive_s = keepalive_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def request(
        self, method: bytes, url: str, headers: bytes, body: bytes, timeout_s: float
    ) -> Response:
        """Send and return the answer with its head read. `headers`: pre-encoded `Name: value\\r\\n` lines.

        Raises OSError (ConnectionError, ProtocolError) when connecting or reading fails and
        TimeoutError when the upstream is silent past `timeout_s`. A kept-alive connection that turns
        out closed before any answer byte (the upstream timed it out) is replaced once: the request
        never reached a handler.
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
            reused = conn.served > 0
            try:
                return await _wait(conn.send(request, timeout_s), timeout_s)
            except Disconnected:
                conn.close()
                if not reused or conn.received:
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
                await _wait(slot, timeout_s, f"no upstream connection came free in {timeout_s:g} s")
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
        for conn in list(self._open):
            conn.close()
        self._idle.clear()


async def _wait(future: asyncio.Future[Any], timeout_s: float, message: str = SILENT) -> Any:
    """`await future`, or TimeoutError after `timeout_s` (one timer handle, no extra task)."""
    if future.done():
        return future.result()
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future, message)
    try:
        return await future
    finally:
        timer.cancel()
