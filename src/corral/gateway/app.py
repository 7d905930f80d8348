"""The gateway as a plain ASGI app: a path table, the one error translation, and its lifecycle."""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import time
from typing import Any

import orjson

from corral.config import Settings
from corral.errors import CorralError, MethodNotAllowedError, NotFoundError, PermissionDeniedError
from corral.gateway.admin import AdminApi
from corral.gateway.deployments import check_targets
from corral.gateway.feedback import check_owner, parse_feedback
from corral.gateway.guardrails import Guard, moderations
from corral.gateway.http import (
    Receive,
    Send,
    header,
    new_trace_id,
    parse_json_object,
    read_body,
    send_bytes,
    send_error,
    send_json,
)
from corral.gateway.openapi import openapi_spec
from corral.gateway.parts import Parts, build_parts, build_stages
from corral.gateway.proxy import Proxy
from corral.gateway.stages import Stage
from corral.gateway.watcher import StoreWatcher
from corral.store.traces import FeedbackRecord

log = logging.getLogger("corral.gateway")
PROXIED = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}


class Gateway:
    """One gateway process: call it as an ASGI app; `start()`/`stop()` run from the ASGI lifespan.

    Give it `Parts` (from `build_parts`), or settings and the keyword arguments of `build_parts`.
    `stages` adds stages to the default request path (after the body checks, before cost and trace).
    """

    def __init__(
        self,
        parts: Parts | Settings,
        *,
        stages: list[Stage] | None = None,
        tune_gc: bool = False,
        **build: Any,
    ) -> None:
        self.parts = parts if isinstance(parts, Parts) else build_parts(parts, **build)
        self.tune_gc = tune_gc  # a process of its own (`corral serve`): see `quiet_gc`
        p = self.parts
        self.settings, self.store, self.registry, self.tracer = p.settings, p.store, p.registry, p.tracer
        self.metrics, self.routes = p.metrics, p.routes
        g = p.settings.gateway
        self.watcher = StoreWatcher(
            p.keys, p.routes, p.limiter, p.store, p.registry.models, g.deployments_poll_s
        )
        self.proxy = Proxy(
            build_stages(p, stages),
            p.pool,
            p.routes.in_flight,
            p.metrics,
            g,
            max_body_bytes=int(p.settings.tracing.max_body_kb * 1024),
        )
        self.admin = AdminApi(
            p.keys,
            p.routes,
            p.store,
            p.limiter,
            p.tracer,
            p.workers,
            redis_configured=bool(p.settings.redis.url),
            refresh=self.watcher.poll,
            registry=p.registry,
        )
        self.dashboard = None
        if p.settings.monitor.enabled and p.settings.monitor.dashboard:
            from corral.monitor.dashboard import Dashboard

            self.dashboard = Dashboard(p.store, p.keys, p.settings.monitor)
        self.started = False
        metrics_env = g.metrics_key_env
        self._metrics_key = (os.environ.get(metrics_env) or None) if metrics_env else None
        if metrics_env and self._metrics_key is None:
            log.warning(
                "gateway.metrics_key_env names %s, which is not set: /metrics needs an admin key", metrics_env
            )
            self._metrics_key = os.urandom(32).hex()  # no value matches: only admin keys get in
        self._openapi = orjson.dumps(openapi_spec())
        self._retention: asyncio.Task[None] | None = None

    @property
    def live(self) -> dict[str, Any]:
        """The deployments being served now (the route table's)."""
        return self.routes.live

    @property
    def version_in_flight(self) -> dict[str, int]:
        return self.routes.in_flight.counts

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        def prepare() -> None:
            self.store.ensure_ready()
            check_targets(
                self.settings.deployments, self.registry.models.resolve, self.settings.source or "settings"
            )
            self.routes.deployments.seed(self.settings.deployments)
            self.watcher.poll()
            self.parts.heartbeat.start()

        await asyncio.to_thread(prepare)
        if self.tracer is not None:
            self.tracer.start()
        await self.parts.limiter.start()
        self.watcher.start()
        if self.settings.tracing.retention_days:
            self._retention = asyncio.create_task(self._purge_expired())
        if self.tune_gc:
            quiet_gc()
        self.started = True
        log.info(
            "gateway ready: %d deployment(s): %s",
            len(self.live),
            ", ".join(sorted(self.live))
            or "none yet (add them under `deployments:` in corral.yaml or PUT /admin/deployments/NAME)",
        )

    async def _purge_expired(self) -> None:
        """`tracing.retention_days`: purge old traces and feedback now and every interval, in batches."""
        from corral.privacy import purge_expired

        tracing = self.settings.tracing
        assert tracing.retention_days is not None
        while True:
            try:
                counts = await asyncio.to_thread(
                    purge_expired, self.store, tracing.retention_days, batch=tracing.retention_batch
                )
                if any(counts.values()):
                    log.info("retention purged %(traces)d traces and %(feedback)d feedback rows", counts)
            except Exception as exc:  # noqa: BLE001 - a store outage must not end the loop
                log.warning("retention purge failed (will retry): %s", exc)
            await asyncio.sleep(tracing.retention_interval_s)

    async def stop(self) -> None:
        self.started = False
        if self._retention is not None:
            self._retention.cancel()
        self.watcher.stop()
        await self.proxy.drain()
        await asyncio.to_thread(self.parts.heartbeat.stop)
        await self.parts.pool.close()
        await self.parts.limiter.close()
        for stage in self.proxy.stages:
            if isinstance(stage, Guard):
                await stage.close()  # its classifier client
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.close)

    def flush_traces(self, timeout_s: float = 10.0) -> bool:
        """From another thread: wait for requests in flight to submit their traces, then store them all.

        A client can read the end of an answer a moment before its trace is submitted, so tests and
        the quickstart call this before reading the trace table.
        """
        deadline = time.monotonic() + timeout_s
        while self.proxy.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.tracer is None:
            return not self.proxy.busy
        return self.tracer.flush(max(0.0, deadline - time.monotonic())) and not self.proxy.busy

    # -- ASGI ---------------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        trace_id = new_trace_id()
        path, method = scope["path"], scope["method"]
        try:
            kind = PROXIED.get(path)
            if kind is not None:
                _method(method, "POST")
                await self.proxy.handle(kind, scope, receive, send, trace_id)
            elif path.startswith("/admin/"):
                await self.admin.handle(method, path, scope, receive, send, trace_id)
            elif self.dashboard is not None and (path == "/dashboard" or path.startswith("/dashboard/")):
                await self.dashboard.handle(method, path, scope, receive, send)
            else:
                await self._simple(path, method, scope, receive, send, trace_id)
        except ConnectionResetError:
            return  # the client left before sending its whole request
        except Exception as exc:  # noqa: BLE001 - the one translation into OpenAI error JSON
            await send_error(send, exc, trace_id)

    async def _simple(
        self, path: str, method: str, scope: dict[str, Any], receive: Receive, send: Send, trace_id: str
    ) -> None:
        if path == "/health":
            _method(method, "GET")
            await send_json(send, 200, {"status": "ok"}, trace_id)
        elif path == "/ready":
            _method(method, "GET")
            # ready while every deployment has a route that can serve: not while a worker crash-loops
            # or a target is retired or unresolvable (the problems say which)
            ready = self.started and all(live.servable for live in self.live.values())
            problems = {name: live.problems for name, live in self.live.items() if live.problems}
            state = {"ready": ready, "routes": self.routes.ready_routes(), "problems": problems}
            await send_json(send, 200 if ready else 503, state, trace_id)
        elif path == "/metrics":
            _method(method, "GET")
            await self._metrics_access(scope)
            body = self.metrics.render()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif path == "/openapi.json":
            _method(method, "GET")
            await send_bytes(send, 200, self._openapi, trace_id)
        elif path == "/v1/models":
            _method(method, "GET")
            key = await self.parts.keys.authenticate(header(scope, b"authorization"))
            data = [
                {"id": n, "object": "model", "created": 0, "owned_by": "corral"}
                for n in sorted(self.live)
                if key.reaches(n)
            ]
            await send_json(send, 200, {"object": "list", "data": data}, trace_id)
        elif path == "/v1/moderations":
            _method(method, "POST")
            await self.parts.keys.authenticate(header(scope, b"authorization"))
            request = parse_json_object(
                await read_body(receive, int(self.settings.gateway.max_body_mb * 1024 * 1024))
            )
            guard = next((s for s in self.proxy.stages if isinstance(s, Guard)), None)
            await send_json(send, 200, await moderations(self.settings, request, guard), trace_id)
        elif path == "/v1/feedback":
            _method(method, "POST")
            await self._feedback(scope, receive, send, trace_id)
        else:
            raise NotFoundError(f"no route {path}", hint="the API is under /v1; see /openapi.json")

    async def _metrics_access(self, scope: dict[str, Any]) -> None:
        """With gateway.metrics_key_env set, /metrics wants that variable's value (or an admin key) as bearer."""
        if self._metrics_key is None:
            return
        sent = header(scope, b"authorization") or ""
        if hmac.compare_digest(sent.encode(), f"Bearer {self._metrics_key}".encode()):
            return
        key = await self.parts.keys.authenticate(sent or None)
        if not key.is_admin:
            raise PermissionDeniedError(
                "/metrics needs the metrics key (gateway.metrics_key_env) or an admin key"
            )

    async def _feedback(self, scope: dict[str, Any], receive: Receive, send: Send, trace_id: str) -> None:
        key = await self.parts.keys.authenticate(header(scope, b"authorization"))
        body = parse_json_object(await read_body(receive, 64 * 1024))
        feedback = parse_feedback(body)
        await self.parts.limiter.admit(key)  # feedback counts against RPM like any request
        recent = self.tracer.recent if self.tracer else None
        await check_owner(key, feedback.trace_id, recent, self.store)
        record = FeedbackRecord(
            trace_id,
            feedback.trace_id,
            feedback.score,
            feedback.label,
            feedback.comment,
            key.id,
            correction=feedback.correction,
        )
        if self.tracer is not None:
            self.tracer.submit(record)
        await send_json(
            send,
            200,
            {"id": trace_id, "object": "feedback", "trace_id": record.trace_id, "score": record.score},
            trace_id,
        )


def quiet_gc(gen0_threshold: int = 50_000) -> None:
    """Fewer, shorter GC pauses in a serving process: the tail of the latency distribution.

    Everything alive after start-up (modules, settings, routes) is frozen out of the collector's
    sight, and the youngest generation is collected every `gen0_threshold` allocations instead of
    700, so a pause no longer lands on every few requests (each request allocates a few hundred objects).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(gen0_threshold, older, oldest)


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowedError(f"use {allowed} here, not {method}", allow=allowed)


__all__ = ["CorralError", "Gateway"]
