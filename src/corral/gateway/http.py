"""Plain ASGI helpers for the hot path: read a body, send JSON or bytes, and the one error translation."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from corral.errors import CorralError, InvalidInputError, OverloadedError, RateLimitError

log = logging.getLogger("corral.gateway")
JSON_TYPE = (b"content-type", b"application/json")
TRACE_HEADER = b"x-corral-trace-id"
Send = Any
Receive = Any


class BodyTooLargeError(InvalidInputError):
    http_status = 413


class MethodNotAllowedError(InvalidInputError):
    http_status = 405


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
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return data


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
    """The one translation of errors into OpenAI's error JSON, status and headers."""
    if isinstance(exc, CorralError):
        extra = []
        if isinstance(exc, RateLimitError | OverloadedError):
            extra.append((b"retry-after", str(max(1, round(exc.retry_after_s))).encode()))
        return exc.http_status, orjson.dumps(exc.to_openai()), extra
    log.exception("internal error", exc_info=exc)
    body = {
        "error": {
            "message": "internal error in the gateway",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    return 500, orjson.dumps(body), []


async def send_error(send: Send, exc: BaseException, trace_id: str) -> int:
    status, body, extra = error_body(exc)
    await send_bytes(send, status, body, trace_id, extra)
    return status
