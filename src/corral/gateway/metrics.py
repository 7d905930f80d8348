"""Prometheus metrics of one gateway, on its own registry so several gateways in a process stay apart."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    """Every series the gateway exports; label children are cached so the hot path does a dict lookup."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "corral_requests",
            "Requests by deployment, route and status",
            ["deployment", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "corral_request_seconds", "Request latency", ["deployment"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "corral_ttft_seconds",
            "Time to first token of streams",
            ["deployment"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "corral_tokens", "Tokens by deployment and kind", ["deployment", "kind"], registry=r
        )
        self.cost = Counter("corral_cost_usd", "Cost in USD by deployment", ["deployment"], registry=r)
        self.in_flight = Gauge("corral_in_flight", "Requests in flight per route", ["route"], registry=r)
        self.upstream_errors = Counter(
            "corral_upstream_errors", "Failed upstream attempts", ["route", "reason"], registry=r
        )
        self.fallbacks = Counter(
            "corral_fallbacks", "Requests answered by a fallback", ["deployment"], registry=r
        )
        self.breaker_open = Gauge(
            "corral_breaker_open", "1 while a route's breaker is open", ["route"], registry=r
        )
        self.shadow = Counter("corral_shadow_requests", "Shadow copies by outcome", ["outcome"], registry=r)
        self.guard_verdicts = Counter(
            "corral_guard_verdicts",
            "Guard verdicts by deployment, check and action",
            ["deployment", "check", "action"],
            registry=r,
        )
        self.rate_limited = Counter(
            "corral_rate_limited", "Requests refused by limits", ["reason"], registry=r
        )
        self.redis_up = Gauge("corral_redis_up", "1 when shared limits use Redis, 0 when local", registry=r)
        self.store_up = Gauge("corral_store_up", "1 when the trace writer reaches the store", registry=r)
        self.trace_queue = Gauge("corral_trace_queue", "Traces waiting in memory", registry=r)
        self.traces_written = Counter("corral_traces_written", "Traces committed to the store", registry=r)
        self.traces_spooled = Counter("corral_traces_spooled", "Traces written to the disk spool", registry=r)
        self.traces_dropped = Counter(
            "corral_traces_dropped", "Traces lost because the spool was full", registry=r
        )
        self.spool_bytes = Gauge("corral_trace_spool_bytes", "Bytes in the trace spool", registry=r)
        self.spool_near_cap = Gauge(
            "corral_trace_spool_near_cap", "1 when the spool nears its cap", registry=r
        )
        self.otlp_spans = Counter(
            "corral_otlp_spans", "Spans sent to the OTLP collector, by outcome", ["outcome"], registry=r
        )
        self.worker_restarts = Counter(
            "corral_worker_restarts", "Local worker restarts", ["model"], registry=r
        )
        self.workers_ready = Gauge(
            "corral_workers_ready", "Local workers answering health checks", registry=r
        )
        self.worker_failing = Gauge(
            "corral_worker_failing",
            "1 while a version's local worker fails to start or serve; `error` is its last error",
            ["model", "error"],
            registry=r,
        )
        self._worker_errors: dict[str, str] = {}
        self.store_up.set(1)
        self._cache: dict[tuple[str, ...], tuple[object, ...]] = {}
        self._usage: dict[str, tuple[object, ...]] = {}

    def request_done(self, deployment: str, route: str, status: int, seconds: float) -> None:
        key = (deployment, route, str(status))
        children = self._cache.get(key)
        if children is None:
            children = (self.requests.labels(deployment, route, str(status)), self.latency.labels(deployment))
            self._cache[key] = children
        children[0].inc()  # type: ignore[attr-defined]
        children[1].observe(seconds)  # type: ignore[attr-defined]

    def usage(self, deployment: str, prompt: int, completion: int, cost: float) -> None:
        children = self._usage.get(deployment)
        if children is None:
            children = self._usage[deployment] = (
                self.tokens.labels(deployment, "prompt"),
                self.tokens.labels(deployment, "completion"),
                self.cost.labels(deployment),
            )
        children[0].inc(prompt)  # type: ignore[attr-defined]
        children[1].inc(completion)  # type: ignore[attr-defined]
        if cost:
            children[2].inc(cost)  # type: ignore[attr-defined]

    def worker_error(self, ref: str, error: str | None) -> None:
        """Show (or, with None, clear) the last error of a version's failing worker."""
        error = error[:200] if error is not None else None
        old = self._worker_errors.pop(ref, None)
        if old is not None and old != error:
            self.worker_failing.remove(ref, old)
        if error is not None:
            self._worker_errors[ref] = error
            self.worker_failing.labels(ref, error).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
