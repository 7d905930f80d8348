"""Intervals and paired tests: Wilson for 0/1 means, bootstrap otherwise, paired bootstrap and permutation.

A bootstrap over all-correct items collapses to [1, 1]; Wilson's interval does not, so 0/1 metrics use
it. Everything resamples item indices with a fixed seed, so any aggregate (a mean, macro F1, a p95)
gets an interval the same way and runs are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sp

SEED = 20260101
RESAMPLES = 1000
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A metric's value on a run, its 95% interval, how many items it rests on, and how it was computed."""

    value: float
    low: float
    high: float
    n: int
    method: str  # wilson | bootstrap | none

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    """Candidate minus baseline on the items both answered: paired bootstrap interval and permutation p."""

    candidate: float
    baseline: float
    diff: float
    low: float
    high: float
    p_value: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _resampled(statistic: Callable[[np.ndarray], float], n: int, seed: int) -> tuple[float, float]:
    if n < 2:
        value = statistic(np.arange(n))
        return (value, value)
    result = sp.bootstrap(
        (np.arange(n),),
        statistic,
        n_resamples=RESAMPLES,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    return (float(low), float(high))


def estimate(
    values: Sequence[Any], aggregate: Callable[[Sequence[Any]], float], *, binary: bool, seed: int = SEED
) -> Estimate:
    """The aggregate of the non-missing observations with its 95% interval."""
    present = [v for v in values if v is not None]
    n = len(present)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    value = float(aggregate(present))
    if binary:
        low, high = wilson(int(round(sum(float(v) for v in present))), n)
        return Estimate(value, low, high, n, "wilson")
    low, high = _resampled(lambda idx: float(aggregate([present[i] for i in idx])), n, seed)
    return Estimate(value, low, high, n, "bootstrap")


def paired(
    candidate: Sequence[Any],
    baseline: Sequence[Any],
    aggregate: Callable[[Sequence[Any]], float],
    *,
    seed: int = SEED,
) -> Difference:
    """Compare two runs item by item (same positions); items missing on either side are left out."""
    pairs = [(c, b) for c, b in zip(candidate, baseline, strict=True) if c is not None and b is not None]
    n = len(pairs)
    if n == 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    cand, base = [c for c, _ in pairs], [b for _, b in pairs]
    pooled = cand + base  # index i < n is the candidate's answer to item i, n + i the baseline's

    def diff_of(idx_c: np.ndarray, idx_b: np.ndarray) -> float:
        return float(aggregate([pooled[int(i)] for i in idx_c]) - aggregate([pooled[int(i)] for i in idx_b]))

    value_c, value_b = float(aggregate(cand)), float(aggregate(base))
    low, high = _resampled(lambda idx: diff_of(idx, idx + n), n, seed)
    p_value = _permutation_p(diff_of, n, seed)
    return Difference(value_c, value_b, value_c - value_b, low, high, p_value, n)


def _permutation_p(diff_of: Callable[[np.ndarray, np.ndarray], float], n: int, seed: int) -> float:
    """Two-sided p-value of a paired permutation test: swap each item's two answers at random."""
    if n < 2:
        return 1.0
    result = sp.permutation_test(
        (np.arange(n), np.arange(n) + n),
        diff_of,
        permutation_type="samples",
        n_resamples=RESAMPLES,
        vectorized=False,
        alternative="two-sided",
        random_state=np.random.default_rng(seed),
    )
    return float(result.pvalue)
