"""The gateway when PostgreSQL goes silent or Redis goes away: down is noticed, nothing hangs, recovery is quick."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy.engine import make_url

from corral.testing.fault_proxy import FaultProxy


def _proxied(url: str) -> tuple[FaultProxy, str]:
    parsed = make_url(url)
    proxy = FaultProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    return proxy, parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


def _wait(condition, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


@pytest.mark.postgres
def test_a_silent_store_is_down_and_unknown_keys_get_a_503_that_names_no_host(
    gateway, fake, h, postgres_url, tmp_path
):
    proxy, proxied = _proxied(postgres_url)
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}},
        store={
            "database_url": proxied,
            "auto_upgrade": True,
            "connect_timeout_s": 1,
            "statement_timeout_s": 2,
        },
        tracing={"spool_dir": str(tmp_path / "spool")},
    )
    try:
        with gateway(settings) as gw, h.admin(gw) as api:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            assert api.post("/v1/chat/completions", json=body).status_code == 200
            assert gw.gateway.flush_traces()
            proxy.silence()  # packets dropped: connections stay open, nothing comes back
            stranger = httpx.post(
                f"{gw.base_url}/v1/chat/completions",
                json=body,
                headers={"Authorization": "Bearer sk-nobody"},
                timeout=20,
            )
            assert stranger.status_code == 503
            message = stranger.json()["error"]["message"]
            assert str(proxy.port) not in message and "127.0.0.1" not in message
            for _ in range(5):  # answered, traced into the spool once the writer sees the store is down
                assert api.post("/v1/chat/completions", json=body).status_code == 200
            assert _wait(lambda: not gw.gateway.tracer.store_up)
            assert b"corral_store_up 0.0" in httpx.get(f"{gw.base_url}/metrics").content
            proxy.restore()
            assert _wait(lambda: gw.gateway.tracer.store_up and not gw.gateway.tracer.spool.pending(), 30)
            assert len(h.traces(gw)) == 6
    finally:
        proxy.close()


@pytest.mark.redis
async def test_redis_counts_again_on_the_first_try_after_an_outage(redis_url):
    from corral.gateway.auth import ApiKey
    from corral.gateway.limits import Limiter
    from corral.gateway.metrics import GatewayMetrics

    parsed = make_url(redis_url.replace("redis://", "postgresql://", 1))
    proxy = FaultProxy((parsed.host or "127.0.0.1", parsed.port or 6379))
    limiter = Limiter(GatewayMetrics(), f"redis://127.0.0.1:{proxy.port}/0", prefix=f"t{time.time_ns()}:")
    key = ApiKey(id=1, name="k", models=frozenset({"*"}), rpm=1000)
    try:
        import asyncio

        await limiter.start()
        await asyncio.gather(*(limiter.admit(key) for _ in range(8)))  # several pooled connections
        assert limiter.shared
        proxy.outage()
        await limiter.admit(key)  # counted locally; Redis marked down
        assert not limiter.shared
        proxy.restore()
        limiter._redis_retry_at = 0.0  # the retry time has come, under concurrent requests
        await asyncio.gather(*(limiter.admit(key) for _ in range(8)))
        assert limiter.shared, "the first try after recovery failed on a stale pooled connection"
    finally:
        await limiter.close()
        proxy.close()
