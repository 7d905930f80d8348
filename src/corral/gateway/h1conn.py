"""One upstream connection (an asyncio protocol fed to llhttp) and the answer it is reading."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any, NamedTuple, Protocol

import httptools

MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers; past it the answer is refused
HIGH_WATER = 1 << 20  # body bytes buffered before reading from the socket pauses (until they are read)
SILENT = "the upstream sent nothing within the call's timeout"


class ProtocolError(ConnectionError):
    """The upstream's answer is not HTTP/1.1 this client can read (malformed, too large a head)."""


class Disconnected(ConnectionError):
    """The upstream closed the connection before its answer was complete."""


class Keeper(Protocol):
    """What a connection tells its pool (corral.gateway.h1client.Pool)."""

    def put(self, conn: Connection) -> None: ...  # served an answer whole: idle, reusable

    def forget(self, conn: Connection) -> None: ...  # closed


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


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
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await wait(self._waiter, self._timeout_s)
        finally:
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


def _too_large() -> ProtocolError:
    return ProtocolError(f"the upstream's answer has over {MAX_HEAD_BYTES // 1024} KiB of headers")


def _expire(waiter: asyncio.Future[Any], message: str = SILENT) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError(message))


class Connection(asyncio.Protocol):
    """One kept-alive connection to an origin; one request at a time."""

    def __init__(self, pool: Keeper, origin: Origin) -> None:
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
        self._interim = False
        self._received = False
        self._head_seen = 0  # bytes received while the head is awaited (httptools holds a header whole)
        self._bodiless = False  # the request was HEAD: its answer's head is all of it

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
            return
        if self._head is not None:
            self._head_seen += len(data)
            if self._head_seen > MAX_HEAD_BYTES:  # one endless header line never reaches on_header
                self._fail(_too_large())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self._response
        if response is not None and not self._complete:
            if not self._chunked and self._content_length is None and exc is None:
                self._complete = True  # a body that ends with the connection (HTTP/1.0 style)
                response._finish()
            else:
                response._finish(Disconnected("the upstream closed the connection mid-answer"))
        elif self._head is not None and not self._head.done():
            self._head.set_exception(Disconnected("the upstream closed the connection before answering"))

    # -- llhttp callbacks ----------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request: the connection's framing is lost
            self._refused = ProtocolError("the upstream sent an answer nobody asked for")
            raise self._refused
        self._content_type, self._content_length, self._chunked, self._head_bytes = b"", None, False, 0

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
            self._refused = _too_large()
            raise self._refused

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (103 Early Hints): the final one follows on this connection
            self._interim = True
            return
        content_type = self._content_type.partition(b";")[0].strip().lower().decode("latin-1")
        response = Response(self, status, content_type, self._content_length)
        self._response = response
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(response)
        if self._bodiless:  # llhttp cannot be told to skip the body Content-Length announces
            self._complete, self._keep_alive = True, False
            response._finish()

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # read now: the parser resets after this
        if self._response is not None:
            self._response._finish()

    # -- used by the pool and the response -------------------------------------------------------------
    def send(self, request: bytes, timeout_s: float) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.timeout_s = timeout_s
        self._response, self._complete, self._keep_alive, self._received = None, False, False, False
        self._head_seen, self._bodiless = 0, request.startswith(b"HEAD ")
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
                self.transport.abort()  # close() would wait to flush a request nobody will read


async def wait(future: asyncio.Future[Any], timeout_s: float, message: str = SILENT) -> Any:
    """`await future`, or TimeoutError after `timeout_s` (one timer handle, no extra task)."""
    if future.done():
        return future.result()
    timer = asyncio.get_running_loop().call_later(timeout_s, _expire, future, message)
    try:
        return await future
    finally:
        timer.cancel()
