"""One proxied request: check it, choose a route, try the plan, pass the answer through, trace it."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from corral.errors import CorralError, InvalidInputError, NotFoundError, OverloadedError, UpstreamError
from corral.gateway import checks
from corral.gateway.auth import ApiKey
from corral.gateway.costs import answer_text, cost_usd, estimate_tokens, prompt_text, usage_tokens
from corral.gateway.http import TRACE_HEADER, Receive, Send, header, parse_json_object, read_body, send_bytes
from corral.gateway.routing import Attempt, attempt_plan, choose_route
from corral.gateway.sse import EventSplitter, StreamSummary, event_data, is_usage_only
from corral.gateway.upstream import Endpoint, UpstreamFailure

if TYPE_CHECKING:
    from corral.gateway.app import Gateway
    from corral.gateway.deployments import LiveDeployment

PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
STREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass(slots=True)
class Call:
    """What one request (or one shadow copy) did, gathered for its trace."""

    trace_id: str
    kind: str
    key: ApiKey
    deployment: str
    body: dict[str, Any]
    stream: bool
    user: str | None
    session: str | None
    prompt_ref: str | None = None
    shadow_of: str | None = None
    started: float = field(default_factory=time.perf_counter)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    endpoint: Endpoint | None = None
    status: int = 0
    error: str | None = None
    response: dict[str, Any] | None = None
    usage: Any = None
    ttft_s: float | None = None
    fallback: bool = False
    attempts: int = 0
    finished: bool = False


class Proxy:
    """The request flow of /v1/chat/completions, /v1/completions and /v1/embeddings."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.body_limit = int(gateway.settings.gateway.max_body_mb * 1024 * 1024)
        self._shadows: set[asyncio.Task[None]] = set()
        self.active = 0  # requests inside handle(), their trace not yet submitted

    async def handle(
        self, kind: str, scope: dict[str, Any], receive: Receive, send: Send, trace_id: str
    ) -> None:
        self.active += 1
        try:
            await self._handle(kind, scope, receive, send, trace_id)
        finally:
            self.active -= 1

    @property
    def busy(self) -> int:
        """User requests whose trace has not been submitted yet (shadow copies finish on their own)."""
        return self.active

    async def _handle(
        self, kind: str, scope: dict[str, Any], receive: Receive, send: Send, trace_id: str
    ) -> None:
        gw = self.gw
        key = await gw.keys.authenticate(header(scope, b"authorization"))
        body = parse_json_object(await read_body(receive, self.body_limit))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidInputError(
                "`model` is required: the name of a deployment (GET /v1/models lists them)"
            )
        live = gw.live.get(model)
        if live is None:
            raise NotFoundError(
                f"model '{model}' does not exist", hint="GET /v1/models lists the models you can use"
            )
        key.check(model)
        await gw.limiter.admit(key)
        prompt_ref = await checks.render_prompt(gw.registry, kind, body)
        stream = checks.check(kind, body)
        call = Call(
            trace_id, kind, key, model, body, stream, checks.user_of(body), header(scope, b"x-corral-session")
        )
        call.prompt_ref = prompt_ref
        task = asyncio.current_task()
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(
            lambda w: task.cancel() if task and not call.finished and _disconnected(w) else None
        )
        try:
            await self._route(call, live, send)
        except asyncio.CancelledError:
            call.status, call.error = 499, "client disconnected; upstream call cancelled"
        except CorralError as exc:
            call.status, call.error = exc.http_status, str(exc)
            raise
        finally:
            call.finished = True
            watcher.cancel()
            if call.status:
                self.finish(call)

    async def _route(self, call: Call, live: LiveDeployment, send: Send) -> None:
        spec = live.spec
        sticky = {"user": call.user, "session": call.session, "key": str(call.key.id or call.key.name)}[
            spec.sticky_by
        ]
        chosen = choose_route(
            live.weights,
            spec.mode,
            sticky_key=sticky,
            rand=random.random(),
            salt=live.name,
            available=[r is not None for r in live.routes],
        )
        self._shadow(call, live)
        now = time.monotonic()
        blocked = [
            Attempt("route", i) for i, r in enumerate(live.routes) if r is None or r.breaker.is_open(now)
        ]
        blocked += [
            Attempt("fallback", i)
            for i, r in enumerate(live.fallbacks)
            if r is None or r.breaker.is_open(now)
        ]
        last: UpstreamFailure | None = None
        for attempt in attempt_plan(chosen, len(live.fallbacks), spec.retries, blocked):
            endpoint = (live.routes if attempt.kind == "route" else live.fallbacks)[attempt.index]
            if endpoint is None or not endpoint.breaker.allows(time.monotonic()):
                continue
            call.attempts += 1
            try:
                await self._attempt(call, endpoint, send)
            except UpstreamFailure as exc:
                last = exc
                self.gw.metrics.upstream_errors.labels(endpoint.label, exc.reason.split(":")[0][:40]).inc()
                continue
            if attempt.kind == "fallback":
                call.fallback = True
                self.gw.metrics.fallbacks.labels(live.name).inc()
            return
        if last is None:
            raise OverloadedError(
                f"no route of '{live.name}' can serve now (workers starting or breakers open)"
            )
        raise UpstreamError(f"every route of '{live.name}' failed; the last said: {last.reason}")

    async def _attempt(self, call: Call, endpoint: Endpoint, send: Send) -> None:
        payload = dict(call.body)
        payload["model"] = endpoint.model
        if call.stream:
            options = payload.get("stream_options")
            payload["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        instance = endpoint.pick()
        endpoint.in_flight[instance] += 1
        self.gw.count_version(endpoint.version_ref, 1)
        call.endpoint = endpoint
        try:
            response = await self.gw.pool.open(endpoint, instance, PATHS[call.kind], orjson.dumps(payload))
            try:
                if call.stream and response.status == 200 and response.content_type == "text/event-stream":
                    endpoint.breaker.record(True, time.monotonic())
                    await self._stream(call, response, send)
                    return
                try:
                    raw = await response.read()
                except STREAM_ERRORS as exc:
                    raise UpstreamFailure(f"{type(exc).__name__}: reading the answer: {exc}") from None
                endpoint.breaker.record(True, time.monotonic())
                await self._reply(call, response.status, raw, send)
            finally:
                response.release()
        except UpstreamFailure:
            endpoint.breaker.record(False, time.monotonic())
            raise
        finally:
            endpoint.in_flight[instance] -= 1
            self.gw.count_version(endpoint.version_ref, -1)

    async def _reply(self, call: Call, status: int, raw: bytes, send: Send) -> None:
        call.status = status
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            call.usage = parsed.get("usage")
            call.response = checks.trace_view(call.kind, parsed)
            if status >= 400:
                call.error = str((parsed.get("error") or {}).get("message") or parsed)[:2000]
        call.finished = True  # from here a disconnect is the normal end of the exchange
        await send_bytes(send, status, raw, call.trace_id)

    async def _stream(self, call: Call, response: aiohttp.ClientResponse, send: Send) -> None:
        options = call.body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        headers = [*SSE_HEADERS, (TRACE_HEADER, call.trace_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        splitter, summary = EventSplitter(), StreamSummary()
        call.status = 200
        try:
            async for chunk in response.content.iter_any():
                out = []
                for event in splitter.feed(chunk):
                    payload = event_data(event)
                    parsed = summary.observe(payload) if payload is not None else None
                    if call.ttft_s is None and summary.text:
                        call.ttft_s = time.perf_counter() - call.started
                    if wants_usage or not is_usage_only(parsed):
                        out.append(event)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        except STREAM_ERRORS as exc:
            call.status, call.error = 502, f"upstream stream broke: {type(exc).__name__}: {exc}"
            error = {"error": {"message": call.error, "type": "upstream_error", "param": None, "code": None}}
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(error) + b"\n\n",
                    "more_body": True,
                }
            )
        if not summary.done and call.status == 200:
            call.error = "upstream stream ended without [DONE]"
        call.usage, call.response = summary.usage, summary.as_response(call.kind)
        call.finished = True
        await send({"type": "http.response.body", "body": splitter.rest(), "more_body": False})

    def _shadow(self, call: Call, live: LiveDeployment) -> None:
        for endpoint in live.shadow:
            if endpoint is None or len(self._shadows) >= self.gw.settings.gateway.shadow_max_in_flight:
                self.gw.metrics.shadow.labels("skipped").inc()
                continue
            task = asyncio.get_running_loop().create_task(self._shadow_call(call, endpoint))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)

    async def _shadow_call(self, call: Call, endpoint: Endpoint) -> None:
        """A copy of the request: its answer is traced and discarded; it never delays the user."""
        body = {k: v for k, v in call.body.items() if k != "stream_options"}
        if call.stream:
            body["stream"] = False
        copy = Call(
            self.gw.new_trace_id(), call.kind, call.key, call.deployment, body, False, call.user, call.session
        )
        copy.prompt_ref, copy.shadow_of, copy.endpoint = call.prompt_ref, call.trace_id, endpoint
        payload = orjson.dumps({**body, "model": endpoint.model})
        instance = endpoint.pick()
        endpoint.in_flight[instance] += 1
        self.gw.count_version(endpoint.version_ref, 1)  # a draining version retires after its shadows too
        try:
            response = await self.gw.pool.open(endpoint, instance, PATHS[call.kind], payload)
            async with response:
                raw = await response.read()
            parsed = orjson.loads(raw) if raw else None
            copy.status = response.status
            if isinstance(parsed, dict):
                copy.usage, copy.response = parsed.get("usage"), checks.trace_view(call.kind, parsed)
            self.gw.metrics.shadow.labels("ok" if copy.status < 400 else "error").inc()
        except (UpstreamFailure, *STREAM_ERRORS, orjson.JSONDecodeError) as exc:
            copy.status = getattr(exc, "status", None) or 502
            copy.error = f"shadow failed: {exc}"
            self.gw.metrics.shadow.labels("error").inc()
        finally:
            endpoint.in_flight[instance] -= 1
            self.gw.count_version(endpoint.version_ref, -1)
            self.finish(copy)

    def finish(self, call: Call) -> None:
        """Metrics, limits and the trace record: all in memory; the writer thread does the I/O."""
        gw = self.gw
        latency = time.perf_counter() - call.started
        endpoint = call.endpoint
        label = endpoint.label if endpoint else "-"
        tokens = usage_tokens(call.usage)
        estimated = tokens is None
        if tokens is None:
            tokens = (estimate_tokens(prompt_text(call.body)), estimate_tokens(answer_text(call.response)))
        cost = cost_usd(endpoint.price, *tokens) if endpoint and call.status < 400 else 0.0
        gw.metrics.request_done(call.deployment, label, call.status, latency)
        if call.ttft_s is not None:
            gw.metrics.ttft.labels(call.deployment).observe(call.ttft_s)
        if call.shadow_of is None:
            gw.metrics.usage(call.deployment, tokens[0], tokens[1], cost)
            gw.limiter.record(call.key, tokens[0] + tokens[1], cost)
        if gw.tracer is None:
            return
        record: dict[str, Any] = {
            "id": call.trace_id,
            "at": call.at,
            "day": call.at.strftime("%Y-%m-%d"),
            "key_id": call.key.id,
            "key_name": call.key.name,
            "deployment": call.deployment,
            "endpoint": call.kind,
            "route": label,
            "model_version": endpoint.version_ref if endpoint else None,
            "shadow_of": call.shadow_of,
            "prompt_ref": call.prompt_ref,
            "request": call.body,
            "response": call.response,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "tokens_estimated": estimated,
            "cost_usd": cost,
            "latency_ms": latency * 1000,
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
        if estimated and endpoint and endpoint.tokenizer_dir:
            record["_tokenizer"] = endpoint.tokenizer_dir
            record["_price"] = endpoint.price.model_dump()
        gw.tracer.submit(record)

    async def drain(self) -> None:
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)


def _disconnected(watcher: asyncio.Future[Any]) -> bool:
    if watcher.cancelled() or watcher.exception() is not None:
        return False
    return bool(watcher.result().get("type") == "http.disconnect")
