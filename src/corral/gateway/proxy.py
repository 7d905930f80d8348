"""One proxied request: run the stages, choose a route, try the plan, pass the answer through."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import orjson

from corral.errors import CorralError, OverloadedError, UpstreamError, UpstreamTimeoutError
from corral.gateway import checks
from corral.gateway.accounting import trace_record
from corral.gateway.h1client import Response
from corral.gateway.http import TRACE_HEADER, Receive, Send, new_trace_id, send_bytes
from corral.gateway.routing import Attempt, attempt_plan, choose_route
from corral.gateway.sse import DONE, EventSplitter, StreamSummary, event_data, is_usage_only
from corral.gateway.stages import Answer, Call, Retry, Stage, overrides
from corral.gateway.upstream import Endpoint, UpstreamFailure, UpstreamPool

if TYPE_CHECKING:
    from corral.config import GatewaySettings
    from corral.gateway.deployments import LiveDeployment
    from corral.gateway.metrics import GatewayMetrics
    from corral.gateway.routes import VersionCounts

log = logging.getLogger("corral.gateway.proxy")
PATHS = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
STREAM_ERRORS = (TimeoutError, OSError)


class StageRetry(UpstreamFailure):
    """A stage asked for another attempt: the next one in the plan is tried (not a breaker failure)."""


class Proxy:
    """The request flow of /v1/chat/completions, /v1/completions and /v1/embeddings."""

    def __init__(
        self,
        stages: list[Stage],
        pool: UpstreamPool,
        in_flight: VersionCounts,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self.stages = stages
        self.max_body_bytes = max_body_bytes  # answers past this are streamed through, not buffered
        self.pool = pool
        self.in_flight = in_flight
        self.metrics = metrics
        self.shadow_max = settings.shadow_max_in_flight
        self.request_timeout_s = settings.request_timeout_s
        self._before = [s for s in stages if overrides(s, "before")]
        self._after = [s for s in reversed(stages) if overrides(s, "after")]
        self._chunk = [s for s in reversed(stages) if overrides(s, "chunk") or overrides(s, "stream_end")]
        self._finish = [s for s in stages if overrides(s, "finish")]
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
        call = Call(trace_id, kind, scope, receive)
        answer = None
        try:
            for stage in self._before:
                answer = await stage.before(call)
                if answer is not None:
                    break
        except BaseException:
            release = call.state.pop("release", None)  # what an earlier stage reserved (limits)
            if release is not None:
                release()
            raise
        if answer is not None:  # answered without routing (a guard's refusal): traced like any call
            call.status, call.finished = answer.status, True
            await send_bytes(send, answer.status, answer.body, trace_id)
            self.finish(call)
            return
        await self._routed(call, receive, send)

    async def _routed(self, call: Call, receive: Receive, send: Send) -> None:
        assert call.live is not None
        task = asyncio.current_task()
        watcher = asyncio.ensure_future(receive())

        def on_receive(w: asyncio.Future[Any]) -> None:
            if task and not call.finished and _disconnected(w):
                call.state["client_gone"] = True
                task.cancel()

        watcher.add_done_callback(on_receive)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await self._route(call, call.live, send)
        except TimeoutError:  # the whole request, however fast its stream drips
            limit = f"gateway.request_timeout_s ({self.request_timeout_s:g} s)"
            await self._cut(call, send, UpstreamTimeoutError(f"the request took longer than {limit}"))
        except asyncio.CancelledError:
            if call.state.get("client_gone"):
                call.status, call.error = 499, "client disconnected; upstream call cancelled"
            else:  # cancelled by the server: its drain timeout ran out during this answer
                cut = OverloadedError(
                    "the gateway shut down before this answer ended (its drain timeout ran out)"
                )
                await self._cut(call, send, cut)
        except CorralError as exc:
            call.status, call.error = exc.http_status, str(exc)
            raise
        finally:
            call.finished = True
            watcher.cancel()
            if call.status:
                self.finish(call)

    async def _cut(self, call: Call, send: Send, error: CorralError) -> None:
        """End an answer the gateway itself cuts short: an SSE error event if streaming began, else the error."""
        if call.finished:  # the answer was already on its way out in full
            return
        call.status, call.error = error.http_status, str(error)
        try:
            if call.state.get("streaming"):
                event = b"data: " + orjson.dumps(error.to_openai()) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": False})
            else:
                await send_bytes(send, error.http_status, orjson.dumps(error.to_openai()), call.trace_id)
        except Exception:  # noqa: BLE001 - the connection is going away as well
            log.debug("could not tell the client about trace %s being cut", call.trace_id)

    async def _route(self, call: Call, live: LiveDeployment, send: Send) -> None:
        spec = live.spec
        assert call.key is not None
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
                reason = "stage-retry" if isinstance(exc, StageRetry) else exc.reason.split(":")[0][:40]
                self.metrics.upstream_errors.labels(endpoint.label, reason).inc()
                continue
            if attempt.kind == "fallback":
                call.fallback = True
                self.metrics.fallbacks.labels(live.name).inc()
            return
        if last is None:
            why = "; ".join(live.problems) or "its routes' breakers are open after repeated failures"
            raise OverloadedError(f"no route of '{live.name}' can serve now: {why}")
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
        self.in_flight.add(endpoint.version_ref, 1)
        call.endpoint = endpoint
        try:
            response = await self.pool.open(endpoint, instance, PATHS[call.kind], orjson.dumps(payload))
            try:
                if call.stream and response.status == 200 and response.content_type == "text/event-stream":
                    endpoint.breaker.record(True, time.monotonic())
                    await self._stream(call, response, send)
                    return
                try:
                    raw, whole = await response.read_capped(self.max_body_bytes)
                except STREAM_ERRORS as exc:
                    raise UpstreamFailure(f"{type(exc).__name__}: reading the answer: {exc}") from None
                if not whole:
                    endpoint.breaker.record(True, time.monotonic())
                    await self._relay_large(call, response, raw, send)
                    return
                parsed = _json_object(raw)
                if response.status < 400 and parsed is None:  # HTML from a proxy, a truncated body
                    kind = response.content_type or "no content type"
                    raise UpstreamFailure(
                        f"upstream answered {response.status} with a body that is not JSON ({kind})"
                    )
                endpoint.breaker.record(True, time.monotonic())
                await self._reply(call, response.status, raw, send, parsed)
            finally:
                response.release()
        except StageRetry:
            raise
        except UpstreamFailure:
            endpoint.breaker.record(False, time.monotonic())
            raise
        except asyncio.CancelledError:
            endpoint.breaker.abandon()  # a cancelled probe says nothing about the upstream
            raise
        finally:
            endpoint.in_flight[instance] -= 1
            self.in_flight.add(endpoint.version_ref, -1)

    async def _reply(
        self, call: Call, status: int, raw: bytes, send: Send, parsed: dict[str, Any] | None
    ) -> None:
        call.status, call.answer = status, raw
        for stage in self._after:
            verdict = await stage.after(call)
            if isinstance(verdict, Retry):
                raise StageRetry(f"{type(stage).__name__} asked for another attempt: {verdict.reason}")
            if isinstance(verdict, Answer):
                status, raw = call.status, call.answer = verdict.status, verdict.body
                parsed = _json_object(raw)
        if parsed is not None:
            call.usage = parsed.get("usage")
            call.response = checks.trace_view(call.kind, parsed)
            if status >= 400:
                call.error = str((parsed.get("error") or {}).get("message") or parsed)[:2000]
        call.finished = True  # from here a disconnect is the normal end of the exchange
        await send_bytes(send, status, raw, call.trace_id)

    async def _relay_large(self, call: Call, response: Response, head: bytes, send: Send) -> None:
        """An answer past tracing.max_body_kb: passed through as it comes, neither buffered nor stored."""
        call.status, call.finished = response.status, True
        headers = [
            (b"content-type", (response.content_type or "application/json").encode()),
            (TRACE_HEADER, call.trace_id.encode()),
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        size = len(head)
        try:
            async for chunk in response.chunks():
                size += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except STREAM_ERRORS as exc:
            call.error = f"upstream answer broke after {size} bytes: {type(exc).__name__}"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        call.response = {"truncated": True, "bytes": size, "note": "over tracing.max_body_kb: not stored"}

    async def _stream(self, call: Call, response: Response, send: Send) -> None:
        options = call.body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        headers = [*SSE_HEADERS, (TRACE_HEADER, call.trace_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        call.state["streaming"] = True
        splitter, summary = EventSplitter(), StreamSummary()
        call.status = 200
        try:
            async for chunk in response.chunks():
                out = []
                for event in splitter.feed(chunk):
                    payload = event_data(event)
                    parsed = summary.observe(payload) if payload is not None else None
                    if call.ttft_s is None and summary.has_output:
                        call.ttft_s = time.perf_counter() - call.started
                    if wants_usage or not is_usage_only(parsed):
                        out.append(event)
                for stage in self._chunk:
                    out = stage.chunk(call, out)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                    if summary.done and any(event_data(e) == DONE for e in out):
                        # the client has the whole answer: a disconnect from here (clients close on
                        # [DONE]) ends the exchange normally, not a cancelled call, while the upstream's
                        # body still ends (the connection goes back to the pool)
                        call.finished = True
                if call.stop_stream:  # a stage ended it (e.g. a blocking guard check): the upstream is closed
                    break
        except STREAM_ERRORS as exc:
            splitter = (
                EventSplitter()
            )  # the partial event before the break is dropped, not sent after the error
            call.status, call.error = 502, f"upstream stream broke: {type(exc).__name__}: {exc}"
            error = UpstreamError(call.error).to_openai()
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps(error) + b"\n\n",
                    "more_body": True,
                }
            )
        if not summary.done and call.status == 200 and not call.stop_stream:
            call.error = "upstream stream ended without [DONE]"
        call.usage, call.response = summary.usage, summary.as_response(call.kind)
        held = [] if call.stop_stream else [e for stage in self._chunk for e in stage.stream_end(call)]
        call.finished = True
        rest = b"" if call.stop_stream else splitter.rest()
        await send({"type": "http.response.body", "body": b"".join(held) + rest, "more_body": False})

    def _shadow(self, call: Call, live: LiveDeployment) -> None:
        for endpoint in live.shadow:
            if endpoint is None or len(self._shadows) >= self.shadow_max:
                self.metrics.shadow.labels("skipped").inc()
                continue
            task = asyncio.get_running_loop().create_task(self._shadow_call(call, endpoint))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)

    async def _shadow_call(self, call: Call, endpoint: Endpoint) -> None:
        """A copy of the request: its answer is traced and discarded; it never delays the user."""
        body = {k: v for k, v in call.body.items() if k != "stream_options"}
        if call.stream:
            body["stream"] = False
        copy = Call(new_trace_id(), call.kind, call.scope, None, body, call.key, call.deployment, call.live)
        copy.user, copy.session = call.user, call.session
        copy.prompt_ref, copy.shadow_of, copy.endpoint = call.prompt_ref, call.trace_id, endpoint
        payload = orjson.dumps({**body, "model": endpoint.model})
        instance = endpoint.pick()
        endpoint.in_flight[instance] += 1
        self.in_flight.add(endpoint.version_ref, 1)  # a draining version retires after its shadows too
        try:
            response = await self.pool.open(endpoint, instance, PATHS[call.kind], payload)
            async with response:
                raw, whole = await response.read_capped(self.max_body_bytes)
            parsed = orjson.loads(raw) if raw and whole else None  # a huge answer is not kept
            copy.status = response.status
            if isinstance(parsed, dict):
                copy.usage, copy.response = parsed.get("usage"), checks.trace_view(call.kind, parsed)
            self.metrics.shadow.labels("ok" if copy.status < 400 else "error").inc()
        except (UpstreamFailure, *STREAM_ERRORS, orjson.JSONDecodeError) as exc:
            copy.status = getattr(exc, "status", None) or 502
            copy.error = f"shadow failed: {exc}"
            self.metrics.shadow.labels("error").inc()
        finally:
            endpoint.in_flight[instance] -= 1
            self.in_flight.add(endpoint.version_ref, -1)
            self.finish(copy)

    def finish(self, call: Call) -> None:
        """The stages' `finish` hooks (cost, metrics, limits, the trace): in memory; the writer does I/O.

        A hook that fails is logged and skipped: finishing never changes the answer's status and never
        loses the trace (a failed Cost stage leaves an unsettled record, which the Trace stage stores).
        """
        call.latency_s = time.perf_counter() - call.started
        if call.state.get("request_bytes", 0) > self.max_body_bytes:
            call.state["request_stored"] = {"truncated": True, "bytes": call.state["request_bytes"]}
        for stage in self._finish:
            try:
                stage.finish(call)
            except Exception as exc:  # noqa: BLE001 - the answer is out; keep the trace
                log.exception("the %s stage failed to finish trace %s", type(stage).__name__, call.trace_id)
                if call.record is None:
                    call.record = trace_record(call)
                call.record.meta = {
                    **call.record.meta,
                    "finish_error": f"{type(stage).__name__}: {exc}"[:300],
                }

    async def drain(self) -> None:
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _disconnected(watcher: asyncio.Future[Any]) -> bool:
    if watcher.cancelled() or watcher.exception() is not None:
        return False
    return bool(watcher.result().get("type") == "http.disconnect")
