"""One error translation: the gateway and the engine worker send the same OpenAI error JSON and Retry-After."""

from __future__ import annotations

import orjson
import pytest

from corral.errors import (
    BodyTooLargeError,
    CorralError,
    MethodNotAllowedError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    openai_error,
)
from corral.gateway.http import error_body


@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (RateLimitError("slow down", retry_after_s=2.4), 429, "2"),
        (OverloadedError("queue full", retry_after_s=0.2), 503, "1"),
        (NotFoundError("no model"), 404, None),
        (BodyTooLargeError("too big"), 413, None),
        (MethodNotAllowedError("use POST"), 405, None),
    ],
)
def test_gateway_and_worker_translate_an_error_alike(
    error: CorralError, status: int, retry_after: str | None
):
    engine_server = pytest.importorskip("corral.engine.server")
    gw_status, gw_body, gw_headers = error_body(error)
    response = engine_server.error_response(error)
    assert gw_status == response.status_code == status
    assert orjson.loads(gw_body) == orjson.loads(response.body) == error.to_openai()
    assert dict(gw_headers).get(b"retry-after") == (retry_after.encode() if retry_after else None)
    assert response.headers.get("retry-after") == retry_after


def test_an_unexpected_exception_is_a_500_without_details():
    status, body, headers = openai_error(ValueError("secret internals"))
    assert status == 500 and "secret" not in str(body) and headers == {}
