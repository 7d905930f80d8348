"""Plain ASGI helpers for the hot path: read a body, send JSON or bytes, and the one error translation."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import orjson

from corral.errors import (
    BodyTooLargeError,
    CorralError,
    InvalidInputError,
    openai_error,
)

log = logging.getLogger("corral.gateway")
JSON_TYPE = (b"content-type", b"application/json")
TRACE_HEADER = b"x-corral-trace-id"
MAX_JSON_DEPTH = 64  # request bodies nested deeper are refused; orjson cannot encode past 255
Send = Any
Receive = Any


_ids = bytearray()
_ids_lock = threading.Lock()
os.register_at_fork(after_in_child=_ids.clear)  # a forked process must not reuse its parent's bytes


def new_trace_id() -> str:
    """32 hex characters: the time in milliseconds (48 bits), then 80 random bits (as UUIDv7 does).

    Nobody can guess another client's trace ids (2^80 per millisecond), and ids sort by time, so the
    traces table's primary key grows at its end: random keys scatter every batch's inserts over
    the whole index, which took twice the writer's time per trace on SQLite at 200k traces and
    grows with the table. The random bytes come from the OS 4 KB at a time, not one call each.
    """
    with _ids_lock:
        if len(_ids) < 10:
            _ids[:] = os.urandom(4090)
        chunk = _ids[-10:]
        del _ids[-10:]
    return f"{time.time_ns() // 1_000_000:012x}{chunk.hex()}"


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client went away while sending its request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"request body is over {limit // (1024 * 1024)} MB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, nested at most MAX_JSON_DEPTH deep (deeper cannot be traced or relayed)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the request body must be a JSON object")
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and json_depth(data) > MAX_JSON_DEPTH:
        raise InvalidInputError(f"the request body is nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH + 1) -> int:
    """How deep containers nest in a parsed JSON value, counting at most to `limit`."""
    if limit <= 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    deepest = 0
    for child in children:
        if isinstance(child, dict | list):
            deepest = max(deepest, json_depth(child, limit - 1))
            if deepest >= limit - 1:
                break
    return 1 + deepest


async def send_bytes(
    send: Send, status: int, body: bytes, trace_id: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = [JSON_TYPE, (TRACE_HEADER, trace_id.encode())]
    if headers:
        all_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, data: Any, trace_id: str) -> None:
    await send_bytes(send, status, orjson.dumps(data), trace_id)


def error_body(exc: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An error as OpenAI's error JSON, status and headers (`corral.errors.openai_error`); logs the unexpected."""
    status, body, headers = openai_error(exc, "internal error in the gateway")
    if not isinstance(exc, CorralError):
        log.exception("internal error", exc_info=exc)
    return status, orjson.dumps(body), [(k.encode(), v.encode()) for k, v in headers.items()]


async def send_error(send: Send, exc: BaseException, trace_id: str) -> int:
    status, body, extra = error_body(exc)
    await send_bytes(send, status, body, trace_id, extra)
    return status
