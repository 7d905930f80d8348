"""`corral serve` as a process: local workers started and restarted, SIGTERM drains every stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from corral.store import Store

ADMIN = "sk-test-admin-key"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(tmp_path: Path, yaml_body: str) -> tuple[subprocess.Popen[bytes], str, Store]:
    db = tmp_path / "serve.db"
    port = _free_port()
    config = tmp_path / "corral.yaml"
    config.write_text(
        f"store: {{database_url: 'sqlite:///{db}'}}\n"
        f"tracing: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
        f"engine: {{worker_port_start: {_free_port()}}}\n" + yaml_body
    )
    env = {**os.environ, "CORRAL_CONFIG": str(config), "CORRAL_ADMIN_KEY": ADMIN}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, base, Store(f"sqlite:///{db}")


def _wait(predicate, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


FAKE_WORKER = (
    "  worker_command: ['{python}', '-m', 'corral.testing.fake_upstream', '--port', '{port}', '--model', '{ref}', '--name', '{ref}']\n"
    "  worker_health_interval_s: 0.2\n  deployments_poll_s: 0.2\n"
)


def _chat(base: str, model: str = "m", **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], **extra}
    return httpx.post(
        base + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
    )


@pytest.mark.slow
def test_serve_starts_a_worker_per_local_version_restarts_it_and_follows_alias_moves(tmp_path, model_dir):
    db = tmp_path / "serve.db"
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry

    reg = Registry(
        Store(f"sqlite:///{db}", auto_upgrade=True),
        ArtifactStore(str(tmp_path / "art"), tmp_path / "cache"),
        actor="t",
    )
    reg.models.register("support", model_dir("1"))
    reg.models.register("support", model_dir("2"))
    reg.models.set_alias("support", "production", 1)
    proc, base, store = _serve(
        tmp_path,
        "gateway:\n"
        + FAKE_WORKER
        + "deployments:\n  m:\n    routes:\n      - {target: support@production}\n",
    )
    try:
        assert _wait(lambda: _chat(base).status_code == 200)
        assert _chat(base).json()["choices"][0]["message"]["content"].startswith("support@1:")
        status = httpx.get(base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        [worker] = status["workers"]
        os.kill(worker["pid"], signal.SIGKILL)  # a crash: the supervisor restarts it
        assert _wait(lambda: _chat(base).status_code == 200 and _restarts(base) == 1)
        reg.models.set_alias(
            "support", "production", 2
        )  # a new version: a new worker, the old serves meanwhile
        assert _wait(lambda: _chat(base).json()["choices"][0]["message"]["content"].startswith("support@2:"))
        assert _wait(
            lambda: [w["ref"] for w in _workers(base)] == ["support@2"]
        )  # the unused worker is stopped
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _workers(base: str) -> list[dict]:  # type: ignore[type-arg]
    return list(
        httpx.get(base + "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}).json()["workers"]
    )


def _restarts(base: str) -> int:
    return sum(w["restarts"] for w in _workers(base))


@pytest.mark.slow
def test_sigterm_during_100_streams_drops_none_and_flushes_every_trace(tmp_path, fake):
    fake.configure(tokens=20, token_delay_s=0.05)  # each stream lasts about a second
    proc, base, store = _serve(
        tmp_path, f"deployments:\n  m:\n    routes:\n      - {{url: '{fake.url}', model: fake-model}}\n"
    )

    def stream(_: int) -> tuple[int, str]:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        with httpx.stream(
            "POST",
            base + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60,
        ) as r:
            return r.status_code, r.read().decode()

    try:
        with ThreadPoolExecutor(100) as pool:
            futures = [pool.submit(stream, i) for i in range(100)]
            assert _wait(lambda: fake.count >= 100, 20)  # all 100 streams are under way
            proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(code == 200 and body.rstrip().endswith("data: [DONE]") for code, body in results)
    assert all(body.count("w18") == 1 for _, body in results)  # every stream arrived whole
    with store.engine.connect() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM traces WHERE status = 200 AND stream")).scalar_one()
            == 100
        )


def _fake_config(worker_url: str, **changes: object) -> None:
    httpx.post(worker_url.removesuffix("/v1") + "/_fake/config", json=changes, timeout=5).raise_for_status()


@pytest.mark.slow
def test_a_serving_worker_survives_failed_probes_and_is_restarted_only_after_many_in_a_row(
    tmp_path, model_dir
):
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry

    reg = Registry(
        Store(f"sqlite:///{tmp_path / 'serve.db'}", auto_upgrade=True),
        ArtifactStore(str(tmp_path / "art"), tmp_path / "cache"),
        actor="t",
    )
    reg.models.register("support", model_dir("1"))
    proc, base, _ = _serve(
        tmp_path,
        "gateway:\n"
        + FAKE_WORKER
        + "  worker_failed_probes: 20\n  worker_start_timeout_s: 10\n"
        + "deployments:\n  m:\n    routes:\n      - {target: support@1}\n",
    )
    try:
        assert _wait(lambda: _chat(base).status_code == 200), (tmp_path / "serve.log").read_text()[-3000:]
        [worker] = _workers(base)
        time.sleep(10)  # past the start-up timeout, which once applied to any failed probe
        _fake_config(worker["url"], healthy=False)  # as a worker busy past its probes' timeout looks
        assert _wait(lambda: _workers(base)[0]["failed_probes"] >= 3, 10)
        assert _chat(base).status_code == 200  # it keeps serving meanwhile; start-up timeout long past
        _fake_config(worker["url"], healthy=True)
        assert _wait(lambda: _workers(base)[0]["failed_probes"] == 0, 10)
        assert _restarts(base) == 0 and _workers(base)[0]["pid"] == worker["pid"]
        _fake_config(worker["url"], healthy=False)  # now for good: restarted after 20 in a row
        assert _wait(lambda: _restarts(base) == 1, 30)
        assert _wait(lambda: _chat(base).status_code == 200)
        assert "failed 20 health probes in a row" in (tmp_path / "serve.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def _serve_once(tmp_path: Path, yaml_body: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "corral.yaml"
    config.write_text(f"store: {{database_url: 'sqlite:///{tmp_path / 'serve.db'}'}}\n" + yaml_body)
    env = {**os.environ, "CORRAL_CONFIG": str(config), "CORRAL_ADMIN_KEY": ADMIN}
    command = [sys.executable, "-m", "corral.cli.main", "serve", "--port", str(_free_port())]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_a_target_that_does_not_resolve_naming_the_file_and_key(tmp_path):
    done = _serve_once(tmp_path, "deployments:\n  m:\n    routes:\n      - {target: nosuch@production}\n")
    assert done.returncode == 2, done.stderr
    assert "corral.yaml: key 'deployments.m.routes[0].target': 'nosuch@production' does not resolve" in (
        done.stderr.replace("\n", " ")
    )


@pytest.mark.slow
def test_serve_reloads_deployments_on_change_and_sighup_and_lists_admin_ones_at_start(tmp_path, fake):
    route = f"{{url: '{fake.url}', model: fake-model}}"
    first = f"gateway: {{deployments_poll_s: 0.2}}\ndeployments:\n  m:\n    routes: [{route}]\n"
    proc, base, _ = _serve(tmp_path, first)
    config = tmp_path / "corral.yaml"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    try:
        assert _chat(base).status_code == 200
        body = {"routes": [{"url": fake.url, "model": "fake-model"}]}
        for name in ("extra", "gone"):
            assert httpx.put(f"{base}/admin/deployments/{name}", json=body, headers=admin).status_code == 200
        assert httpx.delete(f"{base}/admin/deployments/gone", headers=admin).status_code == 200
        # an edit of the file reaches the routes, no restart
        config.write_text(config.read_text() + f"  n:\n    routes: [{route}]\n")
        assert _wait(lambda: _chat(base, model="n").status_code == 200)
        # a target that cannot serve is refused, naming the file and key; the rest stays as it was
        config.write_text(config.read_text() + "  bad:\n    routes: [{target: nosuch@production}]\n")
        assert _wait(lambda: "not reloaded" in (tmp_path / "serve.log").read_text())
        assert "key 'deployments.bad.routes[0].target'" in (tmp_path / "serve.log").read_text()
        assert _chat(base, model="n").status_code == 200 and _chat(base, model="bad").status_code == 404
        # SIGHUP reloads even when the file's time and size look unchanged
        text = config.read_text().replace("  bad:\n    routes: [{target: nosuch@production}]\n", "")
        text = text.replace("  n:\n", "  o:\n")
        stat = config.stat()
        config.write_text(text + " " * (stat.st_size - len(text.encode())))
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        time.sleep(1)
        assert _chat(base, model="o").status_code == 404  # not noticed without the signal
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _chat(base, model="o").status_code == 200)
        assert _chat(base, model="n").status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    proc, base, _ = _serve(tmp_path, first)  # again, on the same store
    try:
        assert _wait(
            lambda: "gateway ready: 2 deployment(s): extra, m" in (tmp_path / "serve.log").read_text()
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "is invalid and is skipped" not in (tmp_path / "serve.log").read_text()  # the deleted one
