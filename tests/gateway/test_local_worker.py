"""The gateway in front of a real local engine worker started by `corral serve` (a tiny random model)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None or importlib.util.find_spec("corral.engine.server") is None,
        reason="needs the engine extra (torch) and corral.engine.server",
    ),
]
ADMIN = "sk-test-admin-key"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving_tiny(tmp_path: Path, engine: str = "device: cpu", route: str = "") -> Iterator[tuple[str, Path]]:
    """`corral serve` with deployment `tiny` → tiny@production (a tiny random model); yields its URL and db."""
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry
    from corral.store import Store
    from corral.testing import make_tiny_model

    db = tmp_path / "corral.db"
    reg = Registry(
        Store(f"sqlite:///{db}", auto_upgrade=True),
        ArtifactStore(str(tmp_path / "art"), tmp_path / "cache"),
        actor="t",
    )
    reg.models.register("tiny", make_tiny_model(tmp_path / "tiny-src"))
    reg.models.set_alias("tiny", "production", 1)
    port = _free_port()
    config = tmp_path / "corral.yaml"
    config.write_text(
        f"store: {{database_url: 'sqlite:///{db}'}}\n"
        f"artifacts: {{url: '{tmp_path / 'art'}', cache_dir: '{tmp_path / 'cache'}'}}\n"
        f"engine: {{{engine}, worker_port_start: {_free_port()}}}\n"
        "gateway: {deployments_poll_s: 0.2, worker_health_interval_s: 0.2}\n"
        f"deployments:\n  tiny:\n    routes:\n      - {{target: tiny@production{route}}}\n"
    )
    env = {**os.environ, "CORRAL_CONFIG": str(config), "CORRAL_ADMIN_KEY": ADMIN}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", db
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def _client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN, max_retries=0, timeout=60)


def _first_answer(client: openai.OpenAI, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
            )
            return
        except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError):
            time.sleep(0.5)
    raise AssertionError(log.read_text()[-3000:])


def test_openai_sdk_through_the_gateway_to_a_local_engine_worker_with_embeddings(tmp_path):
    with serving_tiny(tmp_path, route=", embeddings: true") as (base, db):
        client = _client(base)
        _first_answer(client, tmp_path / "serve.log")
        chunks = list(
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
            )
        )
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
        # the route asked for embeddings: the version's worker serves them under the deployment's name
        vectors = client.embeddings.create(model="tiny", input=["a cat", "a dog"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
        assert [m.id for m in client.models.list().data] == ["tiny"]
    from sqlalchemy import text

    from corral.store import Store

    with Store(f"sqlite:///{db}").engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT model_version, completion_tokens, tokens_estimated FROM traces"
                " WHERE status = 200 AND endpoint = 'chat'"
            )
        ).all()
    assert {r[0] for r in rows} == {"tiny@1"} and len(rows) == 2 and all(r[1] > 0 and not r[2] for r in rows)


def test_an_8_mb_prompt_gets_its_400_while_health_and_other_requests_carry_on(tmp_path):
    with serving_tiny(tmp_path) as (base, _):
        client = _client(base)
        _first_answer(client, tmp_path / "serve.log")
        [worker] = httpx.get(base + "/admin/status", headers=HEADERS).json()["workers"]
        outcomes: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
            while not stop.is_set():
                r = httpx.post(base + "/v1/chat/completions", json=body, headers=HEADERS, timeout=60)
                outcomes.append(r.status_code)
                assert httpx.get(base + "/health", timeout=10).status_code == 200

        threads = [threading.Thread(target=traffic) for _ in range(2)]
        for t in threads:
            t.start()
        huge = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 1_600_000}]}
        r = httpx.post(base + "/v1/chat/completions", json=huge, headers=HEADERS, timeout=120)
        time.sleep(2)  # a few more health probes of the worker after the big request
        stop.set()
        for t in threads:
            t.join(60)
        assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
        assert outcomes and set(outcomes) == {200}
        [after] = httpx.get(base + "/admin/status", headers=HEADERS).json()["workers"]
        assert after["pid"] == worker["pid"] and after["restarts"] == 0
        trace = httpx.get(base + "/admin/traces?limit=1000", headers=HEADERS).json()["data"]
        [refused] = [t for t in trace if t["status"] == 400]
        assert refused["cost_usd"] == 0


@pytest.mark.skipif(
    importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available(),
    reason="needs a machine without CUDA, where engine.device cuda makes the worker fail to start",
)
def test_a_crash_looping_worker_shows_its_error_in_the_503_ready_status_and_metrics(tmp_path):
    with serving_tiny(tmp_path, engine="device: cuda") as (base, _):
        why = "no CUDA device is available"

        def status() -> list[dict]:  # type: ignore[type-arg]
            try:
                return list(httpx.get(base + "/admin/status", headers=HEADERS, timeout=5).json()["workers"])
            except httpx.HTTPError:
                return []

        def refusal() -> openai.InternalServerError:
            with pytest.raises(openai.InternalServerError) as refused:
                _client(base).chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "x"}]
                )
            return refused.value

        deadline = time.monotonic() + 120
        # the worker's status shows its error first; the deployment's 503 names it from its next rebuild
        while not any(why in (w["last_error"] or "") for w in status()) or why not in refusal().message:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        assert refusal().status_code == 503
        ready = httpx.get(base + "/ready")
        assert ready.status_code == 503 and why in ready.json()["problems"]["tiny"][0]
        assert (
            why
            in httpx.get(base + "/admin/status", headers=HEADERS).json()["deployments"]["tiny"]["problems"][0]
        )
        metrics = httpx.get(base + "/metrics").text
        [failing] = [line for line in metrics.splitlines() if line.startswith("corral_worker_failing{")]
        assert 'error="error: engine.device is' in failing and 'model="tiny@1"' in failing
