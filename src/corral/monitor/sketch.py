"""A fixed log-bucket histogram: mergeable by adding counts, quantiles within 1% relative error."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

GAMMA = 1.02  # bucket i holds (GAMMA**(i-1), GAMMA**i]
RELATIVE_ERROR = (GAMMA - 1) / (GAMMA + 1)  # ≈ 0.0099: the stated error of every quantile
_LOG_GAMMA = math.log(GAMMA)
ZERO = "z"  # values ≤ 0 (e.g. a cached answer with no measurable latency)


def bucket_of(value: float) -> str:
    if value <= 0:
        return ZERO
    return str(math.ceil(math.log(value) / _LOG_GAMMA - 1e-12))


def _order(bucket: str) -> float:
    return -math.inf if bucket == ZERO else int(bucket)


def representative(bucket: str) -> float:
    """The value reported for a bucket: within RELATIVE_ERROR of anything that falls in it."""
    if bucket == ZERO:
        return 0.0
    return 2 * GAMMA ** int(bucket) / (GAMMA + 1)


class LogHistogram:
    """Counts per log bucket, kept sparse as {bucket: count}; stored as JSON in each rollup row."""

    __slots__ = ("counts",)

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts: dict[str, int] = dict(counts or {})

    @classmethod
    def of(cls, values: Iterable[float | None]) -> LogHistogram:
        hist = cls()
        for value in values:
            if value is not None:
                hist.add(value)
        return hist

    def add(self, value: float, count: int = 1) -> None:
        key = bucket_of(value)
        self.counts[key] = self.counts.get(key, 0) + count

    def merge(self, other: LogHistogram | dict[str, Any] | None) -> LogHistogram:
        counts = other.counts if isinstance(other, LogHistogram) else (other or {})
        for key, count in counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(count)
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The value at nearest rank ceil(q·n), to within RELATIVE_ERROR; None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several quantiles in one pass over the buckets (qs ascending)."""
        n = self.total
        if n == 0:
            return [None] * len(qs)
        ranks = [max(1, math.ceil(q * n)) for q in qs]
        out: list[float | None] = []
        seen = 0
        for key in sorted(self.counts, key=_order):
            seen += self.counts[key]
            while len(out) < len(ranks) and seen >= ranks[len(out)]:
                out.append(representative(key))
            if len(out) == len(ranks):
                break
        return out

    def to_json(self) -> dict[str, int]:
        return dict(self.counts)


def nearest_rank(values: list[float], q: float) -> float | None:
    """The exact quantile the sketch approximates (for tests and the plain-way benchmark)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]
