"""OpenTelemetry export: each trace reaches an OTLP/HTTP collector as a GenAI span; a dead collector costs nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from corral.config import Settings
from corral.errors import ConfigError
from corral.gateway.otlp import span_of
from corral.store.traces import TraceRecord


class Collector:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                outer.paths.append(self.path)
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for body in self.bodies
            for resource in body["resourceSpans"]
            for scope in resource["scopeSpans"]
            for span in scope["spans"]
        ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    thread = threading.Thread(target=c.server.serve_forever, daemon=True)
    thread.start()
    yield c
    c.server.shutdown()


def attrs(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_each_request_becomes_a_genai_span_at_the_collector(gateway, fake, h, collector):
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, tracing={"otlp_endpoint": collector.url})
    with gateway(settings) as gw:
        raw = h.client(gw).chat.completions.with_raw_response.create(
            model="m",
            messages=[{"role": "user", "content": "hello"}],
            user="ann",
            temperature=0.2,
            max_tokens=20,
        )
        trace_id = raw.headers["x-corral-trace-id"]
        assert gw.gateway.flush_traces()
        assert wait_for(lambda: collector.spans())
        metrics = httpx.get(gw.base_url + "/metrics").text
    [span] = collector.spans()
    assert collector.paths == ["/v1/traces"]
    assert span["traceId"] == trace_id and len(span["spanId"]) == 16 and span["name"] == "chat m"
    assert span["status"] == {"code": 1}
    a = attrs(span)
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "m"
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == "20"
    assert int(a["gen_ai.usage.input_tokens"]) > 0 and int(a["gen_ai.usage.output_tokens"]) > 0
    assert a["user.id"] == "ann" and a["http.response.status_code"] == "200"
    assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"])
    assert "hello" not in json.dumps(span)  # bodies are never exported
    assert 'corral_otlp_spans_total{outcome="exported"} 1.0' in metrics


def test_a_dead_collector_never_delays_or_fails_requests(gateway, fake, h):
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}}, tracing={"otlp_endpoint": "http://127.0.0.1:9"}
    )
    with gateway(settings) as gw:
        c = h.client(gw)
        for _ in range(3):
            assert h.chat(c).choices[0].message.content
        assert len(h.traces(gw)) == 3  # the store, the system of record, has every trace
        assert wait_for(lambda: 'outcome="failed"' in httpx.get(gw.base_url + "/metrics").text)


def test_errors_and_shadow_copies_map_to_span_status_and_parents():
    at = datetime(2026, 11, 24, tzinfo=UTC)
    record = TraceRecord("a" * 32, at, "d", "completions", 502, error="upstream down", latency_ms=12.5)
    span = span_of(record)
    assert span["status"] == {"code": 2, "message": "upstream down"} and span["name"] == "text_completion d"
    assert int(span["endTimeUnixNano"]) - int(span["startTimeUnixNano"]) == 12_500_000
    assert attrs(span)["error.type"] == "502"
    shadow = span_of(TraceRecord("b" * 32, at, "d", "completions", 200, shadow_of="a" * 32))
    assert shadow["traceId"] == "a" * 32 and shadow["parentSpanId"] == span["spanId"]


def test_a_bad_otlp_endpoint_is_a_clear_config_error(tmp_path):
    path = tmp_path / "corral.yaml"
    path.write_text("tracing:\n  otlp_endpoint: collector:4318\n")
    from corral.config import load_settings

    with pytest.raises(ConfigError, match="otlp_endpoint.*http://"):
        load_settings(path)
    assert Settings.model_validate({"tracing": {"otlp_endpoint": "http://x:4318"}}).tracing.otlp_endpoint
