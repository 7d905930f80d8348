"""Prometheus metrics of one worker: queue, KV usage, token rates, TTFT and latency histograms."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from corral.engine.llm_engine import LLMEngine, StepOutput

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class TokenRate:
    """Tokens per second over a sliding window, for a gauge (counters give the long-run rate)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self.events: deque[tuple[float, int]] = deque()

    def add(self, n: int, now: float | None = None) -> None:
        self.events.append((now if now is not None else time.monotonic(), n))

    def rate(self, now: float | None = None) -> float:
        now = now if now is not None else time.monotonic()
        while self.events and self.events[0][0] < now - self.window_s:
            self.events.popleft()
        return sum(n for _, n in self.events) / self.window_s


class WorkerMetrics:
    def __init__(self, engine: LLMEngine, model_name: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"model": model_name}
        r = self.registry
        sched, bm = engine.scheduler, engine.block_manager
        gauge = Gauge(
            "corral_engine_requests_waiting", "requests waiting to be scheduled", ["model"], registry=r
        )
        gauge.labels(**labels).set_function(lambda: len(sched.waiting))
        gauge = Gauge(
            "corral_engine_requests_running", "requests in the running batch", ["model"], registry=r
        )
        gauge.labels(**labels).set_function(lambda: len(sched.running))
        gauge = Gauge(
            "corral_engine_kv_cache_usage", "fraction of KV cache blocks in use", ["model"], registry=r
        )
        gauge.labels(**labels).set_function(lambda: bm.usage)
        self.prompt_rate, self.generation_rate = TokenRate(), TokenRate()
        gauge = Gauge(
            "corral_engine_prompt_tokens_per_second", "prompt tokens/s, last 10 s", ["model"], registry=r
        )
        gauge.labels(**labels).set_function(self.prompt_rate.rate)
        gauge = Gauge(
            "corral_engine_generation_tokens_per_second",
            "generated tokens/s, last 10 s",
            ["model"],
            registry=r,
        )
        gauge.labels(**labels).set_function(self.generation_rate.rate)
        self.prompt_tokens = Counter(
            "corral_engine_prompt_tokens", "prompt tokens computed", ["model"], registry=r
        ).labels(**labels)
        self.generation_tokens = Counter(
            "corral_engine_generation_tokens", "tokens generated", ["model"], registry=r
        ).labels(**labels)
        self.preemptions = Gauge(
            "corral_engine_preemptions", "sequences preempted so far", ["model"], registry=r
        )
        self.preemptions.labels(**labels).set_function(lambda: sched.num_preemptions)
        self.ttft = Histogram(
            "corral_engine_time_to_first_token_seconds",
            "time to first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.latency = Histogram(
            "corral_engine_request_latency_seconds",
            "arrival to last token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(**labels)
        self.engine = engine
        self._last_prompt_tokens = 0

    def on_step(self, outputs: list[StepOutput], _elapsed: float) -> None:
        stats = self.engine.stats
        new_prompt = stats.prompt_tokens - self._last_prompt_tokens
        self._last_prompt_tokens = stats.prompt_tokens
        self.prompt_tokens.inc(new_prompt)
        self.prompt_rate.add(new_prompt)
        self.generation_tokens.inc(len(outputs))
        self.generation_rate.add(len(outputs))
        for out in outputs:
            seq = out.seq
            if seq.num_output_tokens == 1 and seq.first_token_time is not None:
                self.ttft.observe(seq.first_token_time - seq.arrival_time)
            if out.finished and seq.finish_time is not None:
                self.latency.observe(seq.finish_time - seq.arrival_time)

    def render(self) -> bytes:
        return generate_latest(self.registry)
