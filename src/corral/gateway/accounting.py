"""The stages on the way back: tokens, cost, metrics and limits (Cost), then the trace record (Trace)."""

from __future__ import annotations

from typing import Any

from corral.gateway.costs import answer_text, cost_usd, estimate_tokens, prompt_text, usage_tokens
from corral.gateway.limits import Limiter
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.stages import Call, Stage
from corral.gateway.tracing import TraceWriter


class Cost(Stage):
    """Tokens (upstream usage, else estimated), cost once per call, request metrics, usage against limits."""

    def __init__(self, metrics: GatewayMetrics, limiter: Limiter) -> None:
        self.metrics = metrics
        self.limiter = limiter

    def finish(self, call: Call) -> None:
        endpoint = call.endpoint
        tokens = usage_tokens(call.usage)
        call.tokens_estimated = tokens is None
        if tokens is None:
            tokens = (estimate_tokens(prompt_text(call.body)), estimate_tokens(answer_text(call.response)))
        call.tokens = tokens
        call.cost_usd = cost_usd(endpoint.price, *tokens) if endpoint and call.status < 400 else 0.0
        label = endpoint.label if endpoint else "-"
        self.metrics.request_done(call.deployment, label, call.status, call.latency_s)
        if call.ttft_s is not None:
            self.metrics.ttft.labels(call.deployment).observe(call.ttft_s)
        if call.shadow_of is None and call.key is not None:
            self.metrics.usage(call.deployment, tokens[0], tokens[1], call.cost_usd)
            self.limiter.record(call.key, tokens[0] + tokens[1], call.cost_usd)


class Trace(Stage):
    """The call's trace record, handed to the writer (which does the I/O on its own threads)."""

    def __init__(self, tracer: TraceWriter) -> None:
        self.tracer = tracer

    def finish(self, call: Call) -> None:
        self.tracer.submit(trace_record(call))


def trace_record(call: Call) -> dict[str, Any]:
    endpoint, key = call.endpoint, call.key
    record: dict[str, Any] = {
        "id": call.trace_id,
        "at": call.at,
        "day": call.at.strftime("%Y-%m-%d"),
        "key_id": key.id if key else None,
        "key_name": key.name if key else None,
        "deployment": call.deployment,
        "endpoint": call.kind,
        "route": endpoint.label if endpoint else "-",
        "model_version": endpoint.version_ref if endpoint else None,
        "shadow_of": call.shadow_of,
        "prompt_ref": call.prompt_ref,
        "request": call.body,
        "response": call.response,
        "prompt_tokens": call.tokens[0],
        "completion_tokens": call.tokens[1],
        "tokens_estimated": call.tokens_estimated,
        "cost_usd": call.cost_usd,
        "latency_ms": call.latency_s * 1000,
        "ttft_ms": call.ttft_s * 1000 if call.ttft_s is not None else None,
        "status": call.status,
        "error": call.error,
        "stream": call.stream,
        "user": call.user,
        "session": call.session,
        "meta": {"attempts": call.attempts, "fallback": call.fallback}
        if call.attempts != 1 or call.fallback
        else {},
    }
    if call.tokens_estimated and endpoint and endpoint.tokenizer_dir:
        record["_tokenizer"] = endpoint.tokenizer_dir
        record["_price"] = endpoint.price.model_dump()
    return record
