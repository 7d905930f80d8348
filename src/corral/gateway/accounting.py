"""The stages on the way back: the trace record with tokens and cost, metrics and limits (Cost); storing it (Trace)."""

from __future__ import annotations

from corral.gateway.costs import answer_text, estimate_tokens, prompt_text, usage_tokens
from corral.gateway.http import header
from corral.gateway.limits import Limiter
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.stages import Call, Stage
from corral.gateway.tracing import TraceWriter
from corral.store.traces import TraceRecord


class Cost(Stage):
    """Fills the call's trace record once: tokens (upstream usage, else estimated) and their cost; then
    request metrics and usage against the key's limits. Later stages read `call.record`."""

    def __init__(self, metrics: GatewayMetrics, limiter: Limiter) -> None:
        self.metrics = metrics
        self.limiter = limiter

    def finish(self, call: Call) -> None:
        record = call.record = trace_record(call)
        tokens = usage_tokens(call.usage)
        if tokens is None:
            record.settle(
                estimate_tokens(prompt_text(call.body)), estimate_tokens(answer_text(call.response)), True
            )
        else:
            record.settle(*tokens, False)
        self.metrics.request_done(call.deployment, record.route, call.status, call.latency_s)
        if call.ttft_s is not None:
            self.metrics.ttft.labels(call.deployment).observe(call.ttft_s)
        if call.shadow_of is None and call.key is not None:
            self.metrics.usage(
                call.deployment, record.prompt_tokens, record.completion_tokens, record.cost_usd
            )
            call.state.pop("release", None)
            held = call.state.pop("reservation", None)
            self.limiter.record(
                call.key, record.prompt_tokens + record.completion_tokens, record.cost_usd, held
            )


class Trace(Stage):
    """Hands the call's trace record to the writer (which does the I/O on its own threads)."""

    def __init__(self, tracer: TraceWriter) -> None:
        self.tracer = tracer

    def finish(self, call: Call) -> None:
        if call.record is not None:
            self.tracer.submit(call.record)


def trace_record(call: Call) -> TraceRecord:
    """The call as its trace record, tokens and cost not yet settled."""
    endpoint, key = call.endpoint, call.key
    return TraceRecord(
        id=call.trace_id,
        at=call.at,
        deployment=call.deployment,
        endpoint=call.kind,
        status=call.status,
        key_id=key.id if key else None,
        key_name=key.name if key else None,
        route=endpoint.label if endpoint else "-",
        model_version=endpoint.version_ref if endpoint else None,
        shadow_of=call.shadow_of,
        prompt_ref=call.prompt_ref,
        request=call.state.get("request_stored", call.body),  # a marker for bodies too large to store
        response=call.response,
        latency_ms=call.latency_s * 1000,
        ttft_ms=call.ttft_s * 1000 if call.ttft_s is not None else None,
        error=call.error,
        stream=call.stream,
        user=call.user,
        session=call.session,
        meta=_meta(call),
        price_per_1k=(endpoint.price.prompt_per_1k, endpoint.price.completion_per_1k) if endpoint else None,
        tokenizer_dir=endpoint.tokenizer_dir if endpoint else None,
    )


def _meta(call: Call) -> dict[str, object]:
    """Retries and fallbacks, the stages' notes (guard verdicts), and `source: eval` for requests an
    evaluation sent (x-corral-source: eval), which monitoring, canaries and datasets from traces leave out."""
    meta: dict[str, object] = (
        {"attempts": call.attempts, "fallback": call.fallback} if call.attempts != 1 or call.fallback else {}
    )
    if header(call.scope, b"x-corral-source") == "eval":
        meta["source"] = "eval"
    return meta | call.notes
