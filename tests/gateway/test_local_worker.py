"""The gateway in front of a real local engine worker started by `corral serve` (a tiny random model)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_openai_sdk_through_the_gateway_to_a_local_engine_worker(tmp_path):
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
        f"engine: {{device: cpu, kv_cache_gb: 0.05, worker_port_start: {_free_port()}}}\n"
        "gateway: {deployments_poll_s: 0.2, worker_health_interval_s: 0.2}\n"
        "deployments:\n  tiny:\n    routes:\n      - {target: tiny@production}\n"
    )
    env = {**os.environ, "CORRAL_CONFIG": str(config), "CORRAL_ADMIN_KEY": ADMIN}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=ADMIN, max_retries=0, timeout=60)
    try:
        deadline = time.monotonic() + 120
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8
                )
            except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError):
                time.sleep(0.5)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-3000:]
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
            )
        )
        assert any(c.choices and c.choices[0].delta.content for c in chunks)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    from sqlalchemy import text

    with Store(f"sqlite:///{db}").engine.connect() as conn:
        rows = conn.execute(
            text("SELECT model_version, completion_tokens, tokens_estimated FROM traces WHERE status = 200")
        ).all()
    assert {r[0] for r in rows} == {"tiny@1"} and len(rows) == 2 and all(r[1] > 0 and not r[2] for r in rows)
