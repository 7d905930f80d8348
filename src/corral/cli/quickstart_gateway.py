"""The gateway part of `corral quickstart`: serve a model, send a few requests, show their traces, keep it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from corral.config import Deployment, Route, Settings

DEMO = "support"  # the deployment name clients send as `model`


@contextlib.contextmanager
def _route(model_ref: str | None, console: Any) -> Iterator[Route]:
    """The demo route: a local worker for `model_ref` when the engine is installed, else the fake upstream."""
    import importlib.util

    if model_ref and importlib.util.find_spec("torch") is not None:
        yield Route(target=model_ref)
        return
    if model_ref:
        console.print(
            f"(the engine extra is not installed, so {model_ref} is stood in for by a fake endpoint)"
        )
    from corral.testing import FakeUpstream

    with FakeUpstream(name="demo-endpoint").running() as fake:
        yield Route(url=fake.url, model="fake-model")


def _wait_ready(gateway: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        live = gateway.live.get(DEMO)
        if live is not None and live.routes[0] is not None:
            return True
        time.sleep(0.2)
    return False


DEFAULT_QUESTIONS: list[tuple[str, str | None]] = [("Hello!", None), ("What does corral do?", None)]


def _requests(url: str, key: str, console: Any, questions: list[tuple[str, str | None]]) -> None:
    """Ask each question through the gateway; when an expected answer is known, say whether it matched."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        for text, expected in questions:
            r = client.post(
                "/chat/completions",
                json={
                    "model": DEMO,
                    "messages": [{"role": "user", "content": text}],
                    "max_tokens": 64,
                    "temperature": 0,
                },
            )
            answer = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
            verdict = ""
            if expected is not None:
                verdict = (
                    "[green]✓ right[/green] " if answer.strip() == expected.strip() else "[red]✗ wrong[/red] "
                )
            console.print(
                f"  {text!r} → {verdict}{answer!r}  [dim](trace {r.headers.get('x-corral-trace-id')})[/dim]"
            )
        body = {
            "model": DEMO,
            "messages": [{"role": "user", "content": questions[0][0]}],
            "max_tokens": 16,
            "stream": True,
        }
        with client.stream("POST", "/chat/completions", json=body) as r:
            events = sum(1 for line in r.iter_lines() if line.startswith("data:"))
        console.print(f"  a streamed answer arrived in {events} server-sent events")


def _show_traces(gateway: Any, console: Any) -> None:
    from sqlalchemy import select

    from corral.cli.common import print_table
    from corral.store.models import TraceRow

    gateway.flush_traces()
    with gateway.store.session() as session:
        rows = session.scalars(
            select(TraceRow).where(TraceRow.deployment == DEMO).order_by(TraceRow.at.desc()).limit(3)
        ).all()
        table = [
            [
                r.id,
                r.route,
                r.status,
                r.prompt_tokens,
                r.completion_tokens,
                f"{r.latency_ms:.1f}",
                "yes" if r.stream else "",
            ]
            for r in rows
        ]
    print_table(
        "traced requests", ["trace", "route", "status", "prompt tok", "completion tok", "ms", "stream"], table
    )


def _snippets(settings: Settings, key: str, console: Any, route: Route) -> None:
    url = f"http://{settings.gateway.host}:{settings.gateway.port}/v1"
    if route.target:
        console.print(f"\n{keep_deployment(Path('corral.yaml'), route)}", highlight=False)
    else:
        console.print(
            "\n(the demo endpoint stopped with the quickstart; add a `deployments:` block to corral.yaml "
            "for a real model and run [bold]corral serve[/bold])",
            highlight=False,
        )
    console.print(
        f"Call it with this key (it stays valid until `corral keys revoke quickstart`): {key}",
        highlight=False,
    )
    console.print(
        f"curl {url}/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f'-d \'{{"model": "{DEMO}", "messages": [{{"role": "user", "content": "Hello"}}]}}\'',
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f'from openai import OpenAI\nclient = OpenAI(base_url="{url}", api_key="{key}")\n'
        f'print(client.chat.completions.create(model="{DEMO}", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)',
        highlight=False,
        soft_wrap=True,
    )


@contextlib.contextmanager
def _supervised(supervisor: Any) -> Iterator[None]:
    if supervisor is None:
        yield
        return
    supervisor.start()
    try:
        yield
    finally:
        supervisor.stop()


def quickstart_key(store: Any) -> str:
    """The quickstart's API key: the one a previous run saved under CORRAL_HOME while it is still valid.

    Keys are stored only as hashes, so the raw key is kept in a file only the user can read.
    """
    from corral.config import corral_home
    from corral.gateway.auth import KeyStore, hash_key

    keys = KeyStore(store)
    path = corral_home() / "quickstart" / "api-key"
    if path.is_file():
        raw = path.read_text().strip()
        if raw and keys.find(hash_key(raw)) is not None:
            return raw
    raw, _ = keys.create("quickstart", [DEMO], rpm=600, actor="quickstart")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(raw + "\n")
    return raw


def keep_deployment(config: Path, route: Route) -> str:
    """Write the demo deployment into corral.yaml (so `corral serve` serves it); say what was done.

    Only a file with no deployments yet (`deployments: {}` or none) is changed, and the
    `deployments:` key is replaced, never added twice; otherwise the block is shown to paste.
    """
    import yaml

    block = f"deployments:\n  {DEMO}:\n    routes:\n      - target: {route.target}\n"
    text = config.read_text() if config.is_file() else ""
    try:
        current = (yaml.safe_load(text) or {}).get("deployments")
    except (yaml.YAMLError, AttributeError):
        current = "unreadable"
    if isinstance(current, dict) and DEMO in current:
        return f"{config} already serves `{DEMO}`: run [bold]corral serve[/bold] to keep it running."
    if current:
        return f"To keep it running, add this to the deployments in {config} and run corral serve:\n{block}"
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("deployments:")]
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    config.write_text("".join(lines) + block)
    return f"wrote the `{DEMO}` deployment into {config}: run [bold]corral serve[/bold] to keep it running."


def serve_demo(
    settings: Settings,
    registry: Any,
    console: Any,
    model_ref: str | None = None,
    questions: list[tuple[str, str | None]] | None = None,
) -> None:
    """Start the gateway in process (and a worker for `model_ref`), send requests, show traces, stop."""
    from corral.gateway import Gateway, build_parts
    from corral.gateway.parts import supervisor_of
    from corral.gateway.server import serve_in_thread

    with _route(model_ref, console) as route:
        demo = settings.model_copy(deep=True)
        demo.deployments = {**demo.deployments, DEMO: Deployment(routes=[route])}
        parts = build_parts(demo, store=registry.store, registry=registry, local_workers=bool(route.target))
        key = quickstart_key(registry.store)
        supervisor = supervisor_of(parts)
        with _supervised(supervisor), serve_in_thread(Gateway(parts)) as running:
            gateway = running.gateway
            console.print(
                f"gateway listening on {running.url} (model [bold]{DEMO}[/bold] → {route.target or route.url})"
            )
            if not _wait_ready(gateway, 180):
                console.print(
                    "[yellow]the demo model did not become ready; see the worker log under CORRAL_HOME/logs[/yellow]"
                )
                return
            _requests(running.url, key, console, questions or DEFAULT_QUESTIONS)
            _show_traces(gateway, console)
        console.print("gateway stopped cleanly; every request above is in the trace store")
    _snippets(settings, key, console, route)
