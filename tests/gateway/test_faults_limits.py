"""Limits hold under concurrency: admit reserves a request's estimate, record settles it (#16 item 13)."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import RateLimitError
from corral.gateway.auth import ApiKey
from corral.gateway.limits import Limiter
from corral.gateway.metrics import GatewayMetrics


async def _admitted(limiter: Limiter, key: ApiKey, n: int, **estimate: float) -> list:  # type: ignore[type-arg]
    async def one():  # type: ignore[no-untyped-def]
        try:
            return await limiter.admit(key, **estimate)  # type: ignore[arg-type]
        except RateLimitError:
            return None

    return [r for r in await asyncio.gather(*(one() for _ in range(n))) if r is not None]


async def test_concurrent_requests_cannot_overshoot_tpm_or_budget_together():
    limiter = Limiter(GatewayMetrics())
    tpm_key = ApiKey(id=1, name="tpm", models=frozenset({"*"}), tpm=100)
    assert len(await _admitted(limiter, tpm_key, 10, tokens=30)) == 4  # 0, 30, 60, 90 are under 100
    budget_key = ApiKey(id=2, name="budget", models=frozenset({"*"}), budget_usd=1.0)
    held = await _admitted(limiter, budget_key, 10, cost=0.3)
    assert len(held) == 4
    for reservation in held:  # each took less than estimated: the rest is released
        limiter.record(budget_key, 0, 0.1, reservation)
    assert limiter.spend_since[2] == pytest.approx(0.4)
    assert len(await _admitted(limiter, budget_key, 10, cost=0.3)) == 2


@pytest.mark.redis
async def test_reservations_are_shared_through_redis(redis_url):
    import time

    key = ApiKey(id=7, name="k", models=frozenset({"*"}), tpm=100)
    for _ in range(3):  # on a loaded machine a Redis call can pass its 0.25 s timeout: counts go local
        prefix = f"t{time.time_ns()}:"
        a, b = Limiter(GatewayMetrics(), redis_url, prefix), Limiter(GatewayMetrics(), redis_url, prefix)
        try:
            await a.start()
            await b.start()
            both = await asyncio.gather(_admitted(a, key, 5, tokens=30), _admitted(b, key, 5, tokens=30))
            shared = a.shared and b.shared
        finally:
            await a.close()
            await b.close()
        if shared:
            break
    assert shared and sum(len(x) for x in both) == 4


def test_the_request_path_reserves_and_settles_and_a_refusal_after_limits_releases(gateway, fake, h):
    import httpx

    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw, h.admin(gw) as api:
        key = api.post("/admin/keys", json={"name": "t", "tpm": 100_000}).json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        url = f"{gw.base_url}/v1/chat/completions"
        ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50_000}
        assert httpx.post(url, json=ok, headers=auth).status_code == 200
        limiter, key_id = gw.gateway.parts.limiter, gw.gateway.parts.keys._by_hash
        counted = sum(limiter.local.tokens.values())
        assert 0 < counted < 100  # settled to what the answer took, not the 50,000 held
        refused = {"model": "m", "messages": "not a list", "max_tokens": 90_000}  # BodyChecks says 400
        assert httpx.post(url, json=refused, headers=auth).status_code == 400
        assert sum(limiter.local.tokens.values()) == counted  # the reservation was released
        assert key_id  # the key was looked up once and cached
