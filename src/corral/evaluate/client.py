"""Sending items to an OpenAI-compatible target concurrently, with a progress bar and a clean Ctrl-C.

Requests stream so that time to first token is measured; usage comes from the final chunk
(`stream_options.include_usage`). Every request carries `x-corral-source: eval`, which a corral
gateway records as `meta.source = eval` so evaluation traffic never counts as production traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from corral.evaluate.items import Item
from corral.evaluate.outcome import Outcome

SOURCE_HEADER = "x-corral-source"


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: an OpenAI base URL (…/v1), the model name to send, and headers (auth)."""

    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 120.0


@dataclass(frozen=True)
class Generation:
    """Sampling for evaluation: greedy by default, so two runs of one version answer alike."""

    max_tokens: int = 128
    temperature: float = 0.0
    stream: bool = True

    def body(self, model: str, item: Item) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            **item.request,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


@dataclass
class Sent:
    outcomes: list[Outcome]
    interrupted: bool = False


def text_of(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    first = choices[0]
    delta = first.get("delta") or first.get("message")
    text = delta.get("content") if isinstance(delta, dict) else first.get("text")
    return text or ""


async def _read_stream(response: httpx.Response, start: float, outcome: Outcome) -> None:
    parts: list[str] = []
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        text = text_of(chunk)
        if text and outcome.ttft_ms is None:
            outcome.ttft_ms = (time.perf_counter() - start) * 1000
        parts.append(text)
        _take_usage(chunk, outcome)
    outcome.prediction = "".join(parts)


def _take_usage(body: dict[str, Any], outcome: Outcome) -> None:
    usage = body.get("usage")
    if isinstance(usage, dict):
        outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        outcome.completion_tokens = int(usage.get("completion_tokens") or 0)


def _error_text(response: httpx.Response, body: bytes) -> str:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body[:200].decode(errors="replace")
    return f"HTTP {response.status_code}: {message}"


async def ask(client: httpx.AsyncClient, endpoint: Endpoint, gen: Generation, item: Item) -> Outcome:
    """One item's request; a failure is recorded on the outcome, never raised."""
    outcome = Outcome(item.position, item.request, item.reference)
    path = "/chat/completions" if item.endpoint == "chat" else "/completions"
    start = time.perf_counter()
    try:
        async with client.stream(
            "POST", endpoint.url.rstrip("/") + path, json=gen.body(endpoint.model, item)
        ) as r:
            if r.status_code >= 400:
                outcome.error = _error_text(r, await r.aread())
            elif gen.stream and r.headers.get("content-type", "").startswith("text/event-stream"):
                await _read_stream(r, start, outcome)
            else:
                body = json.loads(await r.aread())
                outcome.prediction = text_of(body)
                _take_usage(body, outcome)
    except (httpx.HTTPError, ValueError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    outcome.latency_ms = (time.perf_counter() - start) * 1000
    if outcome.prediction is not None:
        outcome.prediction = outcome.prediction.strip()
    return outcome


async def send_all(
    endpoint: Endpoint,
    items: Sequence[Item],
    gen: Generation,
    *,
    concurrency: int = 16,
    on_done: Callable[[Outcome], None] | None = None,
) -> Sent:
    """Ask every item, at most `concurrency` at once. A cancel (Ctrl-C) keeps the outcomes that finished."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {SOURCE_HEADER: "eval", **endpoint.headers}
    done: list[Outcome] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=httpx.Timeout(endpoint.timeout_s, connect=10)
    ) as client:

        async def one(item: Item) -> None:
            async with gate:
                outcome = await ask(client, endpoint, gen, item)
            done.append(outcome)
            if on_done is not None:
                on_done(outcome)

        tasks = [asyncio.create_task(one(item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return Sent(sorted(done, key=lambda o: o.position), interrupted=True)
    return Sent(sorted(done, key=lambda o: o.position))
