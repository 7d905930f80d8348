"""Routing decisions as pure functions: which route, in which order to try, which instance, breaker state."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field


def sticky_bucket(sticky_key: str, salt: str = "") -> float:
    """A stable point in [0, 100) for a user, session or key: the same input always lands in the same place."""
    digest = hashlib.blake2b(f"{salt}\x00{sticky_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 1_000_000 / 10_000


def choose_route(
    weights: Sequence[float],
    mode: str,
    *,
    sticky_key: str | None,
    rand: float,
    salt: str = "",
    available: Sequence[bool] | None = None,
) -> int:
    """Index of the route a request goes to.

    weighted: a random split by weight. canary: route 0 is production and every other route's weight is
    its percentage; a request with a sticky key (user, session or API key) always gets the same route,
    so one user sees one version. Unavailable routes (no worker, draining) are skipped; their share
    falls to production (canary) or to the others (weighted). `rand` is in [0, 1).
    """
    ok = list(available) if available is not None else [True] * len(weights)
    if mode == "canary":
        point = sticky_bucket(sticky_key, salt) if sticky_key else rand * 100
        edge = 0.0
        for index in range(1, len(weights)):
            edge += weights[index]
            if point < edge:
                return index if ok[index] else 0
        return 0
    live = [w if ok[i] else 0.0 for i, w in enumerate(weights)]
    total = sum(live)
    if total <= 0:
        return 0
    point = rand * total
    edge = 0.0
    for index, weight in enumerate(live):
        edge += weight
        if point < edge and weight > 0:
            return index
    return max(i for i, w in enumerate(live) if w > 0)


@dataclass(frozen=True)
class Attempt:
    """One try in a request's plan: the primary route (`kind='route'`) or a fallback, by index."""

    kind: str  # route | fallback
    index: int


def attempt_plan(
    chosen: int, n_fallbacks: int, retries: int, blocked: Sequence[Attempt] = ()
) -> list[Attempt]:
    """The order of tries: the chosen route 1 + `retries` times, then each fallback once.

    Routes in `blocked` (open breaker, no worker) are left out; when that leaves nothing, the plan is
    the full list anyway, since trying a half-broken route beats failing without trying.
    """
    full = [Attempt("route", chosen)] * (1 + retries) + [Attempt("fallback", i) for i in range(n_fallbacks)]
    skip = set(blocked)
    plan = [a for a in full if a not in skip]
    return plan or full


def least_loaded(in_flight: Sequence[int], start: int = 0) -> int:
    """The instance with the fewest requests in flight; ties go round-robin from `start`."""
    n = len(in_flight)
    best = start % n
    for offset in range(1, n):
        index = (start + offset) % n
        if in_flight[index] < in_flight[best]:
            best = index
    return best


@dataclass
class Breaker:
    """A circuit breaker: `failures` in a row open it for `reset_s`; then one probe decides.

    A probe that never reports (its request cancelled by a client that gave up, or by a drain) is
    abandoned, and one that has not reported within `reset_s` is given up on, so the breaker can
    never stay open for good. Times are passed in (monotonic seconds): tested without sleeping.
    """

    failures: int = 5
    reset_s: float = 10.0
    consecutive: int = 0
    opened_at: float | None = None
    probe_at: float | None = field(default=None)  # when the half-open probe in flight was let through

    @property
    def probing(self) -> bool:
        return self.probe_at is not None

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at < self.reset_s:
            return False
        if self.probe_at is None or now - self.probe_at >= self.reset_s:
            self.probe_at = now  # half-open: let exactly one request through
            return True
        return False

    def is_open(self, now: float) -> bool:
        return self.opened_at is not None and (self.probing or now - self.opened_at < self.reset_s)

    def abandon(self) -> None:
        """The probe ended without an answer either way: the next request may probe."""
        self.probe_at = None

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.consecutive, self.opened_at, self.probe_at = 0, None, None
            return
        self.consecutive += 1
        if self.probing or self.consecutive >= self.failures:
            self.opened_at, self.probe_at = now, None
