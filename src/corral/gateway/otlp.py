"""Optional OpenTelemetry export: each trace as an OTLP/HTTP span with the GenAI semantic conventions.

The SQL store stays the system of record; this is a best-effort copy for an existing tracing
backend (Jaeger, Tempo, Langfuse, Phoenix, an OpenTelemetry Collector). The trace writer's pump
offers it batches; its own thread posts them as OTLP JSON to `{endpoint}/v1/traces`, so a slow or
absent collector never touches the request path. When its queue is full, or the collector keeps
failing, spans are dropped and counted (`corral_otlp_spans{outcome}`), never retried forever.
Message bodies are not exported, only sizes, tokens, cost and timing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

import corral
from corral.gateway.metrics import GatewayMetrics
from corral.store.traces import Record, TraceRecord

log = logging.getLogger("corral.gateway.otlp")

OPERATION = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
SPAN_KIND_CLIENT = 3  # an inference call, as the GenAI conventions model it
STATUS_OK, STATUS_ERROR = 1, 2
REQUEST_PARAMS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in OTLP JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in pairs.items() if v is not None and v != ""]


def _nanos(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


def span_of(record: TraceRecord) -> dict[str, Any]:
    """One trace record as an OTLP span (JSON mapping: hex ids, int64 as strings)."""
    operation = OPERATION.get(record.endpoint, record.endpoint or "request")
    request = record.request or {}
    response = record.response or {}
    choices = response.get("choices") if isinstance(response, dict) else None
    finish = [c.get("finish_reason") for c in choices or [] if isinstance(c, dict) and c.get("finish_reason")]
    status = int(record.status or 0)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": "corral",
        "gen_ai.request.model": record.deployment,
        "gen_ai.response.model": record.model_version or record.route,
        "gen_ai.response.id": response.get("id") if isinstance(response, dict) else None,
        "gen_ai.response.finish_reasons": finish or None,
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "http.response.status_code": status,
        "error.type": str(status) if status >= 400 else None,
        "user.id": record.user,
        "session.id": record.session,
        "corral.route": record.route,
        "corral.key": record.key_name,
        "corral.cost_usd": float(record.cost_usd or 0.0),
        "corral.tokens_estimated": bool(record.tokens_estimated),
        "corral.ttft_ms": record.ttft_ms,
        "corral.stream": bool(record.stream),
        "corral.prompt": record.prompt_ref,
        "corral.shadow_of": record.shadow_of,
    }
    if isinstance(request, dict):
        for field, name in REQUEST_PARAMS.items():
            if isinstance(request.get(field), int | float) and not isinstance(request.get(field), bool):
                attrs[name] = request[field]
    start = _nanos(record.at) if isinstance(record.at, datetime) else 0
    end = start + int(float(record.latency_ms or 0.0) * 1e6)
    trace_id = str(record.id)
    span = {
        "traceId": trace_id,
        "spanId": hashlib.blake2b(trace_id.encode(), digest_size=8).hexdigest(),
        "name": f"{operation} {record.deployment}",
        "kind": SPAN_KIND_CLIENT,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": _attributes(attrs),
        "status": {"code": STATUS_ERROR, "message": str(record.error or "")[:500]}
        if status >= 400
        else {"code": STATUS_OK},
    }
    if record.shadow_of:  # a shadow copy is a child of the request it copied
        span["traceId"] = record.shadow_of
        span["parentSpanId"] = hashlib.blake2b(record.shadow_of.encode(), digest_size=8).hexdigest()
    return span


def export_body(spans: list[dict[str, Any]], service: str) -> bytes:
    resource = {"attributes": _attributes({"service.name": service, "service.version": corral.__version__})}
    scope = {"name": "corral.gateway", "version": corral.__version__}
    return orjson.dumps(
        {"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans}]}]}
    )


class OtlpExporter:
    """A bounded queue of trace records and a thread that posts them to an OTLP/HTTP collector."""

    def __init__(
        self,
        endpoint: str,
        metrics: GatewayMetrics,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 5.0,
        service: str = "corral-gateway",
        max_queued_batches: int = 64,
    ) -> None:
        self.url = endpoint.rstrip("/") + (
            "" if endpoint.rstrip("/").endswith("/v1/traces") else "/v1/traces"
        )
        self.metrics = metrics
        self.service = service
        self._client = httpx.Client(
            timeout=timeout_s, headers={"Content-Type": "application/json", **(headers or {})}
        )
        self._queue: queue.Queue[list[TraceRecord] | None] = queue.Queue(maxsize=max_queued_batches)
        self._thread: threading.Thread | None = None
        self._failing = False

    def offer(self, records: Sequence[Record]) -> None:
        """Hand over a batch of records (feedback is skipped); never blocks (a full queue drops and counts them)."""
        traces = [r for r in records if isinstance(r, TraceRecord)]
        if not traces:
            return
        try:
            self._queue.put_nowait(traces)
        except queue.Full:
            self.metrics.otlp_spans.labels("dropped").inc(len(traces))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-otlp", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (within `timeout_s`), then stop."""
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=timeout_s)
            self._thread.join(timeout_s)
            self._thread = None
        self._client.close()

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                self.send([span_of(r) for r in batch])
            except Exception as exc:  # noqa: BLE001 - export is best effort; the store has the traces
                self.metrics.otlp_spans.labels("failed").inc(len(batch))
                if not self._failing:
                    log.warning("OTLP export to %s failing (%s); spans are dropped meanwhile", self.url, exc)
                self._failing = True
            else:
                self.metrics.otlp_spans.labels("exported").inc(len(batch))
                if self._failing:
                    log.warning("OTLP export to %s works again", self.url)
                self._failing = False

    def send(self, spans: list[dict[str, Any]]) -> None:
        response = self._client.post(self.url, content=export_body(spans, self.service))
        if response.status_code >= 300:
            raise RuntimeError(f"collector answered {response.status_code}: {response.text[:200]}")
