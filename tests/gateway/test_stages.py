"""The stage interface: a test stage that answers before routing, checks and rewrites answers, holds back
SSE chunks and asks for another attempt; the default stage list; Proxy built from parts; no import cycle."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from typing import Any

import httpx
import orjson

import corral.gateway
from corral.gateway.parts import build_parts, build_stages
from corral.gateway.proxy import Proxy
from corral.gateway.stages import Answer, Call, Retry, Stage


class Rewriter(Stage):
    """Refuses "refuse me" before routing; discards the first answer; capitalizes w0 in answers and streams."""

    def __init__(self) -> None:
        self.retried: list[str] = []

    async def before(self, call: Call) -> Answer | None:
        if call.body["messages"][-1]["content"] == "refuse me":
            return Answer(400, orjson.dumps({"error": {"message": "refused by the test stage"}}))
        return None

    async def after(self, call: Call) -> Answer | Retry | None:
        if call.attempts == 1:
            self.retried.append(call.trace_id)
            return Retry("the first answer is never good enough")
        assert call.answer is not None
        return Answer(call.status, call.answer.replace(b"w0", b"W0"))

    def chunk(self, call: Call, events: list[bytes]) -> list[bytes]:
        call.state.setdefault("held", []).extend(events)
        return []

    def stream_end(self, call: Call) -> list[bytes]:
        return [e.replace(b"w0", b"W0") for e in call.state.pop("held", [])]


def test_a_stage_answers_first_checks_rewrites_holds_back_and_retries(gateway, fake, h):
    stage = Rewriter()
    settings = h.settings({"m": {"routes": [h.url_route(fake)], "retries": 1}})
    with gateway(settings, stages=[stage]) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:
        auth = {"Authorization": f"Bearer {h.ADMIN_KEY}"}

        def ask(text: str, **extra: Any) -> httpx.Response:
            body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
            return c.post("/chat/completions", json=body, headers=auth)

        before = fake.count
        refused = ask("refuse me")
        assert refused.status_code == 400 and "test stage" in refused.text
        assert fake.count == before  # answered before routing

        answered = ask("hi")
        assert answered.status_code == 200
        assert answered.json()["choices"][0]["message"]["content"] == "a: W0 w1 w2"
        assert fake.count == before + 2 and len(stage.retried) == 1  # one more attempt was made

        streamed = ask("hi", stream=True)
        assert streamed.status_code == 200
        assert "W0" in streamed.text and '"w0' not in streamed.text and "[DONE]" in streamed.text
        ok = h.traces(gw, status=200, deployment="m")
        assert len(ok) == 2 and {t["id"] for t in ok} >= {answered.headers["x-corral-trace-id"]}
        assert h.traces(gw, status=400)[0]["id"] == refused.headers["x-corral-trace-id"]


def _names(stages: list[Stage]) -> list[str]:
    return [type(s).__name__ for s in stages]


def test_the_default_stage_list_in_order_with_extra_stages_after_the_body_checks(h):
    settings = h.settings({})
    parts = build_parts(settings, store=_memory_store())
    assert _names(build_stages(parts)) == [
        "Keys",
        "Deployment",
        "Limits",
        "PromptTemplates",
        "BodyChecks",
        "Cost",
        "Trace",
    ]
    extra = build_stages(parts, [Rewriter()])
    assert _names(extra)[5] == "Rewriter" and _names(extra)[-2:] == ["Cost", "Trace"]
    quiet = build_parts(h.settings({}, tracing={"enabled": False}), store=parts.store)
    assert "Trace" not in _names(build_stages(quiet))


def test_proxy_is_built_from_its_parts_without_a_server(h):
    parts = build_parts(h.settings({}), store=_memory_store())
    proxy = Proxy(
        build_stages(parts), parts.pool, parts.routes.in_flight, parts.metrics, parts.settings.gateway
    )
    assert proxy.busy == 0 and len(proxy.stages) == 7
    parts.routes.in_flight.add("x@1", 3)
    assert parts.registry.models.in_flight("x@1") == 3
    assert parts.registry.as_actor("someone").models.in_flight("x@1") == 3  # as_actor keeps the count


def test_the_supervisor_gets_the_in_flight_count_and_restart_metric_in_its_constructor(h):
    from corral.gateway.parts import supervisor_of

    parts = build_parts(h.settings({}), store=_memory_store(), local_workers=True)
    supervisor = supervisor_of(parts)
    parts.routes.in_flight.add("x@1", 2)
    assert supervisor.in_flight("x@1") == 2
    supervisor.on_restart("x@1")
    assert parts.metrics.worker_restarts.labels("x@1")._value.get() == 1


def _memory_store() -> Any:
    from corral.store import Store

    return Store("sqlite://")


def test_gateway_modules_import_each_other_without_a_cycle():
    root = Path(corral.gateway.__file__).parent
    names = {m.name for m in pkgutil.iter_modules([str(root)])}
    edges: dict[str, set[str]] = {}
    for name in names:
        found = set()
        tree = ast.parse((root / f"{name}.py").read_text())
        # every import counts, also type-only and function-level ones: a circle of those is still one
        for node in (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)):
            parts = (node.module or "").split(".")
            if parts[:2] == ["corral", "gateway"] and len(parts) > 2:
                found.add(parts[2])
            elif node.module == "corral.gateway":
                found.update(a.name for a in node.names if a.name in names)
        edges[name] = found & names
    assert "app" not in set().union(*(edges[n] for n in names if n != "__init__"))
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in edges[node] - done:
            assert nxt not in path, f"import cycle: {' -> '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])
        done.add(node)

    for name in sorted(names):
        visit(name, [name])
    for name in sorted(names):  # and each really imports on its own
        importlib.import_module(f"corral.gateway.{name}" if name != "__init__" else "corral.gateway")


def test_route_rebuilds_from_the_watcher_and_the_admin_api_never_interleave():
    import threading
    import time

    from corral.gateway.routes import RouteTable, VersionCounts

    class SlowResolver:
        pending, inside, most = True, 0, 0

        def build(self, specs: dict[str, Any]) -> dict[str, Any]:
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.02)  # long enough for another thread to arrive
            self.inside -= 1
            return {}

    class Specs:
        def signature(self) -> tuple[int]:
            return (1,)

        def specs(self) -> dict[str, Any]:
            return {}

    resolver = SlowResolver()
    table = RouteTable(Specs(), resolver, VersionCounts())  # type: ignore[arg-type]
    threads = [threading.Thread(target=table.refresh) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert resolver.most == 1
