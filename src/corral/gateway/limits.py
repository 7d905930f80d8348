"""Requests- and tokens-per-minute limits and monthly budgets: in process, or shared through Redis.

Redis holds only per-minute counters, so losing it loses nothing: the gateway counts locally until it
answers again, and says so in the log and in `corral_redis_up`.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.errors import RateLimitError
from corral.gateway.auth import ApiKey
from corral.gateway.metrics import GatewayMetrics

log = logging.getLogger("corral.gateway.limits")
REDIS_RETRY_S = 5.0
REDIS_TIMEOUT_S = 0.25


def _window(now: float) -> tuple[int, float]:
    """The current minute and the seconds until the next one starts."""
    return int(now // 60), 60 - now % 60


def seconds_to_next_month(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    end = now.replace(day=days, hour=23, minute=59, second=59, microsecond=0)
    return max(1.0, (end - now).total_seconds() + 1)


@dataclass(frozen=True)
class Reservation:
    """What `admit` held for a request: its estimated tokens (in `minute`) and cost."""

    tokens: int = 0
    cost: float = 0.0
    minute: int = -1


NO_RESERVATION = Reservation()


class LocalCounters:
    """Per-key counts for the current minute; older minutes are forgotten as they pass."""

    def __init__(self) -> None:
        self._minute = -1
        self.requests: dict[int | None, int] = {}
        self.tokens: dict[int | None, int] = {}

    def _roll(self, minute: int) -> None:
        if minute != self._minute:
            self._minute, self.requests, self.tokens = minute, {}, {}

    def hit(self, key_id: int | None, minute: int) -> tuple[int, int]:
        self._roll(minute)
        count = self.requests.get(key_id, 0) + 1
        self.requests[key_id] = count
        return count, self.tokens.get(key_id, 0)

    def add_tokens(self, key_id: int | None, minute: int, tokens: int) -> None:
        self._roll(minute)
        self.tokens[key_id] = self.tokens.get(key_id, 0) + tokens


class Limiter:
    """Checks a key's limits before a request and counts its tokens after."""

    def __init__(
        self, metrics: GatewayMetrics, redis_url: str | None = None, prefix: str = "corral:"
    ) -> None:
        self.metrics = metrics
        self.prefix = prefix
        self.local = LocalCounters()
        self.spend_base: dict[int, float] = {}
        self.spend_since: dict[int, float] = {}
        self._redis: Any = None
        self._redis_url = redis_url
        self._redis_retry_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.redis_up.set(0)

    async def start(self) -> None:
        if self._redis_url:
            self._redis = self._client()
            self.metrics.redis_up.set(1)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()

    @property
    def shared(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._redis_retry_at

    def _redis_failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        first = self._redis_retry_at <= now
        self._redis_retry_at = now + REDIS_RETRY_S
        self.metrics.redis_up.set(0)
        if not first:
            return
        log.warning("Redis unreachable (%s); enforcing limits per process until it is back", exc)
        # a new client with an empty pool: the pooled connections died with the outage and would each
        # fail a retry in turn; the old client is closed once its calls in flight are done
        old, self._redis = self._redis, self._client()
        task = asyncio.get_running_loop().create_task(old.aclose())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(
            str(self._redis_url), socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )

    async def admit(self, key: ApiKey, tokens: int = 0, cost: float = 0.0) -> Reservation:
        """Raise RateLimitError (429 with Retry-After) when the key is over a limit or its budget.

        Otherwise reserve the request's estimated `tokens` (against TPM) and `cost` (against the budget)
        at once, so that concurrent requests see each other; `record` settles with what it really took.
        """
        budget = key.budget_usd is not None and key.id is not None
        if budget and key.id is not None and key.budget_usd is not None:
            spent = self.spend_base.get(key.id, 0.0) + self.spend_since.get(key.id, 0.0)
            if spent >= key.budget_usd:
                self.metrics.rate_limited.labels("budget").inc()
                raise RateLimitError(
                    f"key '{key.name}' has spent its monthly budget of ${key.budget_usd:g}",
                    retry_after_s=seconds_to_next_month(),
                    hint="raise the budget or wait for next month",
                )
        reservation = Reservation(0, cost if budget else 0.0, -1)
        if key.rpm is not None or key.tpm is not None:
            reservation = await self._admit_rate(key, tokens, reservation.cost)
        if reservation.cost and key.id is not None:
            self.spend_since[key.id] = self.spend_since.get(key.id, 0.0) + reservation.cost
        return reservation

    async def _admit_rate(self, key: ApiKey, tokens: int, cost: float) -> Reservation:
        minute, retry = _window(time.time())
        reserve = max(0, tokens) if key.tpm is not None else 0
        requests, used = await self._count(key, minute, reserve)
        if key.rpm is not None and requests > key.rpm:
            self._add_tokens_now(key, minute, -reserve)
            self.metrics.rate_limited.labels("rpm").inc()
            raise RateLimitError(
                f"key '{key.name}' is over its limit of {key.rpm} requests per minute", retry_after_s=retry
            )
        if key.tpm is not None and used - reserve >= key.tpm:
            self._add_tokens_now(key, minute, -reserve)
            self.metrics.rate_limited.labels("tpm").inc()
            raise RateLimitError(
                f"key '{key.name}' is over its limit of {key.tpm} tokens per minute", retry_after_s=retry
            )
        return Reservation(reserve, cost, minute)

    async def _count(self, key: ApiKey, minute: int, reserve: int) -> tuple[int, int]:
        """(requests, tokens) this minute, this request and its reserved tokens included."""
        requests, tokens = self.local.hit(key.id, minute)
        self.local.add_tokens(key.id, minute, reserve)
        local = (requests, tokens + reserve)
        if not self.shared:
            return local
        base = f"{self.prefix}{key.id}:{minute}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(base + ":rpm")
            pipe.expire(base + ":rpm", 120)
            pipe.incrby(base + ":tpm", reserve)
            pipe.expire(base + ":tpm", 120)
            shared_requests, _, shared_tokens, _ = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: fall back to local counts
            self._redis_failed(exc)
            return local
        self.metrics.redis_up.set(1)
        return int(shared_requests), int(shared_tokens or 0)

    def record(self, key: ApiKey, tokens: int, cost: float, reservation: Reservation | None = None) -> None:
        """After a request: settle its tokens (TPM) and cost (budget) against what `admit` reserved."""
        held = reservation or NO_RESERVATION
        if key.id is not None and (cost or held.cost):
            self.spend_since[key.id] = self.spend_since.get(key.id, 0.0) + cost - held.cost
        if key.tpm is None:
            return
        minute, _ = _window(time.time())
        # the reservation lives in its own minute; once that has passed, the tokens count in this one
        delta = tokens - held.tokens if held.minute == minute else tokens
        self._add_tokens_now(key, minute, delta)

    def _add_tokens_now(self, key: ApiKey, minute: int, tokens: int) -> None:
        if not tokens:
            return
        self.local.add_tokens(key.id, minute, tokens)
        if self.shared:
            task = asyncio.get_running_loop().create_task(
                self._add_tokens(f"{self.prefix}{key.id}:{minute}:tpm", tokens)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _add_tokens(self, name: str, tokens: int) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incrby(name, tokens)
            pipe.expire(name, 120)
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    def set_spend(self, month_spend: dict[int, float]) -> None:
        """New totals from the store (poller thread); spend counted locally since is now included."""
        self.spend_base, self.spend_since = month_spend, {}
