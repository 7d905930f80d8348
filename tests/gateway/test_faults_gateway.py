"""The gateway under faults and attack (#16): each test reproduces one failure found by probing it."""

from __future__ import annotations

import time

import httpx
import pytest


def test_a_cancelled_half_open_probe_does_not_leave_the_breaker_open(gateway, fake, h):
    fake.configure(fault="hang")
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake, timeout_s=0.5)]}},
        gateway={"breaker_failures": 2, "breaker_reset_s": 2.0},
    )
    with gateway(settings) as gw, h.admin(gw) as api:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses = [api.post("/v1/chat/completions", json=body).status_code for _ in range(3)]
        assert statuses[0] == 502 and statuses[-1] == 503  # timeouts opened the breaker
        time.sleep(2.1)
        with pytest.raises(httpx.TimeoutException):  # the probe's client gives up: the probe is cancelled
            api.post("/v1/chat/completions", json=body, timeout=0.3)
        fake.configure(fault="none")
        time.sleep(0.2)
        answer = api.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text


def _raw_request(port: int, head: bytes, pause_s: float = 0.0) -> bytes:
    """Send `head` over a raw socket (pausing after it if asked) and return what the gateway answers."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        if pause_s:
            time.sleep(pause_s)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


def test_huge_headers_get_431_and_unknown_tokens_are_not_kept_in_memory(gateway, fake, h):
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, gateway={"max_header_kb": 16})
    with gateway(settings) as gw:
        token = "x" * (1024 * 1024)
        try:
            answer = httpx.get(f"{gw.base_url}/v1/models", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 431
        except httpx.RemoteProtocolError:  # the gateway may close before the client finished sending
            pass
        for i in range(50):  # tokens under the cap: 401, and none of them stays in the key cache
            bogus = {"Authorization": f"Bearer sk-{i}-" + "y" * 8000}
            assert httpx.get(f"{gw.base_url}/v1/models", headers=bogus).status_code == 401
        assert gw.gateway.parts.keys._digest_bytes == 0 and not gw.gateway.parts.keys._digests
        admin = {"Authorization": f"Bearer {h.ADMIN_KEY}"}
        assert httpx.get(f"{gw.base_url}/v1/models", headers=admin).status_code == 200
        assert len(gw.gateway.parts.keys._digests) == 1


def test_slow_headers_and_slow_bodies_time_out_with_408(gateway, fake, h):
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}},
        gateway={"client_header_timeout_s": 0.5, "client_body_timeout_s": 0.5},
    )
    with gateway(settings) as gw:
        partial_head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
        assert _raw_request(gw.port, partial_head).startswith(b"HTTP/1.1 408")
        partial_body = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + h.ADMIN_KEY.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"model"'
        )
        assert _raw_request(gw.port, partial_body).startswith(b"HTTP/1.1 408")
        assert httpx.get(f"{gw.base_url}/health").status_code == 200  # kept-alive and quick ones are fine


def test_connections_past_the_cap_are_closed_on_arrival_and_service_goes_on(gateway, fake, h):
    import socket

    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}},
        gateway={"max_client_connections": 20, "client_header_timeout_s": 1.0},
    )
    with gateway(settings) as gw:
        idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(40)]  # say nothing
        try:
            time.sleep(0.3)
            assert len(gw.server.server_state.connections) <= 20
            time.sleep(1.5)  # the header timeout frees the held ones
            assert httpx.get(f"{gw.base_url}/health").status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_routes_may_not_send_corrals_own_secrets_upstream(gateway, fake, h, monkeypatch):
    from corral.errors import ConfigError
    from corral.gateway import Gateway

    monkeypatch.setenv("CORRAL_UPSTREAM_FAKE", "sk-upstream")
    monkeypatch.setenv("DECLARED_KEY", "sk-declared")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret")
    settings = h.settings({"m": {"routes": [h.url_route(fake, api_key_env="DECLARED_KEY")]}})
    with gateway(settings) as gw, h.admin(gw) as api:
        for name in ("CORRAL_ADMIN_KEY", "CORRAL_DATABASE_URL", "AWS_SECRET_ACCESS_KEY"):
            spec = {"routes": [h.url_route(fake, api_key_env=name)]}
            answer = api.put("/admin/deployments/x", json=spec)
            assert answer.status_code == 403 and name in answer.json()["error"]["message"]
        spec = {"routes": [h.url_route(fake, api_key_env="CORRAL_UPSTREAM_FAKE")]}
        assert api.put("/admin/deployments/y", json=spec).status_code == 200
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        assert api.post("/v1/chat/completions", json={"model": "m", **chat}).status_code == 200
        deadline = time.monotonic() + 10
        while "y" not in gw.gateway.live and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api.post("/v1/chat/completions", json={"model": "y", **chat}).status_code == 200
        sent = [r["headers"].get("Authorization") for r in fake.requests]
        assert sent == ["Bearer sk-declared", "Bearer sk-upstream"]
    bad = h.settings({"m": {"routes": [h.url_route(fake, api_key_env="CORRAL_ADMIN_KEY")]}})
    with pytest.raises(ConfigError, match="CORRAL_ADMIN_KEY"):
        Gateway(bad)


def test_url_credentials_are_redacted_and_metrics_can_require_a_key(gateway, fake, h, monkeypatch):
    from corral.gateway.upstream import redact_url

    assert redact_url("http://user:pass@host:1/v1") == "http://***@host:1/v1"
    assert redact_url("https://host/v1?a=b@c") == "https://host/v1?a=b@c"
    monkeypatch.setenv("CORRAL_METRICS_KEY", "sk-metrics")
    secret_url = fake.url.replace("http://", "http://user:hunter2@")
    settings = h.settings(
        {"m": {"routes": [{"url": secret_url, "model": "fake-model"}]}},
        gateway={"metrics_key_env": "CORRAL_METRICS_KEY"},
    )
    with gateway(settings) as gw, h.admin(gw) as api:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        assert api.post("/v1/chat/completions", json=chat).status_code == 200
        assert httpx.get(f"{gw.base_url}/metrics").status_code in (401, 403)
        scraped = httpx.get(f"{gw.base_url}/metrics", headers={"Authorization": "Bearer sk-metrics"})
        assert scraped.status_code == 200 and b"corral_requests" in scraped.content
        assert api.get("/metrics").status_code == 200
        shown = [
            scraped.text,
            api.get("/admin/deployments").text,
            api.get("/admin/status").text,
            httpx.get(f"{gw.base_url}/ready").text,
            str(h.traces(gw)),
        ]
        assert [i for i, text in enumerate(shown) if "hunter2" in text] == []
        assert "***@" in shown[1]
