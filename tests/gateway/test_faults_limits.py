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

    prefix = f"t{time.time_ns()}:"
    a, b = Limiter(GatewayMetrics(), redis_url, prefix), Limiter(GatewayMetrics(), redis_url, prefix)
    key = ApiKey(id=7, name="k", models=frozenset({"*"}), tpm=100)
    try:
        await a.start()
        await b.start()
        both = await asyncio.gather(_admitted(a, key, 5, tokens=30), _admitted(b, key, 5, tokens=30))
        assert sum(len(x) for x in both) == 4
    finally:
        await a.close()
        await b.close()
