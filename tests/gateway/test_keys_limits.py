"""API keys and limits: 401/403/429 with Retry-After, budgets, and limits shared through Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from corral.gateway.auth import KeyStore
from corral.store import Store


def _key(gw, **kwargs) -> str:  # type: ignore[no-untyped-def]
    raw, _ = KeyStore(gw.gateway.store).create(kwargs.pop("name", "k"), **kwargs)
    return raw


def test_missing_invalid_and_revoked_keys_get_401(gateway, fake, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        response = httpx.post(
            gw.url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
        )
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
        with pytest.raises(openai.AuthenticationError):
            h.chat(h.client(gw, key="sk-corral-wrong"))
        key = _key(gw, name="temp")
        assert h.chat(h.client(gw, key=key)).choices
        KeyStore(gw.gateway.store).revoke("temp")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                h.chat(h.client(gw, key=key))
            except openai.AuthenticationError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("a revoked key kept working")


def test_a_key_reaches_only_its_models_and_non_admins_not_the_admin_api(gateway, fake, h):
    with gateway(
        h.settings({"a": {"routes": [h.url_route(fake)]}, "b": {"routes": [h.url_route(fake)]}})
    ) as gw:
        key = _key(gw, models=["a"])
        c = h.client(gw, key=key)
        assert h.chat(c, model="a").choices
        with pytest.raises(openai.NotFoundError):
            h.chat(c, model="b")  # someone else's deployment reads as missing
        assert [m.id for m in c.models.list()] == ["a"]
        assert (
            httpx.get(gw.base_url + "/admin/keys", headers={"Authorization": f"Bearer {key}"}).status_code
            == 403
        )


def test_admin_api_creates_lists_and_revokes_keys_stored_hashed(gateway, fake, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw, h.admin(gw) as a:
        created = a.post("/admin/keys", json={"name": "svc", "models": ["m"], "rpm": 10}).json()
        assert created["key"].startswith("sk-") and created["rpm"] == 10
        assert h.chat(h.client(gw, key=created["key"])).choices
        listed = a.get("/admin/keys").json()["data"]
        assert [k["name"] for k in listed] == ["svc"] and "key" not in listed[0]
        from sqlalchemy import text

        with gw.gateway.store.engine.connect() as conn:
            stored = conn.execute(text("SELECT key_hash FROM api_keys")).scalar_one()
        assert created["key"] not in stored and len(stored) == 64
        assert a.delete(f"/admin/keys/{created['id']}").status_code == 200
        assert a.post("/admin/keys", json={"name": "x", "rpm": "many"}).status_code == 400
        refused = a.post("/admin/keys", json={"name": "bad\u0000name"})  # PostgreSQL text refuses NUL
        assert refused.status_code == 400 and "control characters" in refused.json()["error"]["message"]


def test_rpm_limit_answers_429_with_retry_after(gateway, fake, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        key = _key(gw, rpm=3)
        c = h.client(gw, key=key)
        for _ in range(3):
            h.chat(c)
        with pytest.raises(openai.RateLimitError) as info:
            h.chat(c)
        retry_after = int(info.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert "3 requests per minute" in info.value.message


def test_tpm_limit_counts_the_tokens_of_answered_requests(gateway, fake, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        c = h.client(gw, key=_key(gw, tpm=10))
        h.chat(c)  # 2 prompt + 4 completion tokens
        h.chat(c)  # 12 tokens used: over the limit from now on
        with pytest.raises(openai.RateLimitError):
            h.chat(c)


def test_monthly_budget_stops_a_key_once_spent(gateway, fake, h):
    route = h.url_route(fake, price={"prompt_per_1k": 1000.0, "completion_per_1k": 1000.0})  # $6 a request
    with gateway(h.settings({"m": {"routes": [route]}})) as gw:
        c = h.client(gw, key=_key(gw, budget_usd=10.0))
        h.chat(c)
        h.chat(c)
        with pytest.raises(openai.RateLimitError) as info:
            h.chat(c)
        assert "budget" in info.value.message


@pytest.mark.redis
def test_two_gateway_processes_share_one_redis_limit(tmp_path, fake, redis_url, redis_prefix, h):
    config = tmp_path / "corral.yaml"
    config.write_text(
        f"store: {{database_url: 'sqlite:///{tmp_path / 'shared.db'}'}}\n"
        f"redis: {{url: '{redis_url}'}}\n"
        f"auth: {{redis_prefix: '{redis_prefix}'}}\n"
        f"deployments:\n  m:\n    routes:\n      - {{url: '{fake.url}', model: fake-model}}\n"
    )
    env = {**os.environ, "CORRAL_CONFIG": str(config)}
    keys = KeyStore(Store(f"sqlite:///{tmp_path / 'shared.db'}", auto_upgrade=True))
    ports = [_free_port(), _free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "corral.cli.main", "serve", "--port", str(p)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for port in ports:
            _wait_ready(f"http://127.0.0.1:{port}")
        for attempt in range(3):  # a minute boundary mid-way resets the window: then try again
            raw, _ = keys.create(f"shared-{attempt}", rpm=5)
            minute = int(time.time() // 60)
            codes = [_post(ports[i % 2], raw).status_code for i in range(10)]
            if int(time.time() // 60) == minute:
                break
        assert codes.count(200) == 5 and codes.count(429) == 5, codes
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)


def test_redis_down_keeps_serving_with_local_limits_and_says_so(gateway, fake, h, caplog):
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, redis={"url": "redis://127.0.0.1:1/0"})
    with gateway(settings) as gw:
        c = h.client(gw, key=_key(gw, rpm=2))
        h.chat(c)
        h.chat(c)
        with pytest.raises(openai.RateLimitError):
            h.chat(c)
        metrics = httpx.get(gw.base_url + "/metrics").text
        assert "corral_redis_up 0.0" in metrics
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records)


def _post(port: int, key: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(base: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} never became ready")


def test_a_key_from_corral_keys_create_admin_reaches_the_admin_api(gateway, fake, h, capsys, monkeypatch):
    from corral.cli.main import main

    monkeypatch.delenv("CORRAL_ADMIN_KEY")  # no admin key from the environment: the CLI makes the first
    with pytest.raises(SystemExit) as info:
        main(["keys", "create", "--name", "ops", "--admin"])
    assert info.value.code in (0, None)
    raw = capsys.readouterr().out.strip().splitlines()[-1]
    assert raw.startswith("sk-")
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        headers = {"Authorization": f"Bearer {raw}"}
        listed = httpx.get(gw.base_url + "/admin/keys", headers=headers).json()["data"]
        assert [k["name"] for k in listed] == ["ops"] and listed[0]["admin"]
        assert h.chat(h.client(gw, key=raw)).choices  # an admin key reaches every model
