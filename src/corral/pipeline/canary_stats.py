"""Always-valid confidence bounds for the mean of a bounded stream, and for a difference of two arms.

The canary looks at its arms again and again, so a fixed-sample interval would promote a bad candidate
far more often than its nominal level. These bounds are *confidence sequences*: they hold at every
sample size at once, so any number of looks, at any times, keeps the error within alpha.

The method is the predictable plug-in empirical-Bernstein confidence sequence (Waudby-Smith & Ramdas,
"Estimating means of bounded random variables by betting", JRSSB 2023, PrPl-EB; after Howard et al.,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", AoS 2021, Theorem 4). For values
x_i in [0, 1] and bets lambda_i in [0, 1) chosen from the past only,

    M_t = prod_i exp(lambda_i (x_i - mu) - (x_i - mu_hat_{i-1})^2 psi(lambda_i)),  psi(l) = -log(1-l) - l

is a nonnegative supermartingale (Fan et al. 2015), so by Ville's inequality the lower bound

    L_t = (sum lambda_i x_i - log(1/alpha) - sum (x_i - mu_hat_{i-1})^2 psi(lambda_i)) / sum lambda_i

is below the mean at every t simultaneously with probability at least 1 - alpha; the upper bound is
the mirror image. The bounds adapt to the variance, which matters for rare events such as errors (a
1% error rate has variance 0.01, not Hoeffding's 0.25). Everything the bounds need is five running
sums (`Summary`), so a verdict is O(1) and a summary extends chunk by chunk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

MAX_BET = 0.5  # lambda's cap (the paper's c = 1/2): bounded bets keep psi small and the bounds stable


@dataclass(frozen=True)
class Summary:
    """The running sums of one arm's values of one metric, in arrival order (values in [0, 1]).

    `tuned_for` is the alpha the bets were tuned for: any alpha gives valid bounds, the tuned one the
    tightest. The sums are: count, sum of values, sum of squared deviations from the running mean
    (the variance estimate), sum of bets, sum of bet * value, and the variance penalty.
    """

    n: int = 0
    total: float = 0.0
    squares: float = 0.0
    bets: float = 0.0
    bet_total: float = 0.0
    penalty: float = 0.0
    tuned_for: float = 0.025

    @property
    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def bound(self, alpha: float, side: str) -> float:
        """One-sided always-valid bound (`side` lower or upper) on the mean, within [0, 1]."""
        if self.n == 0 or self.bets <= 0:
            return 0.0 if side == "lower" else 1.0
        slack = (math.log(1 / alpha) + self.penalty) / self.bets
        centre = self.bet_total / self.bets
        return max(0.0, centre - slack) if side == "lower" else min(1.0, centre + slack)

    def extend(self, values: Sequence[float] | np.ndarray[Any, Any]) -> Summary:
        """This summary with `values` appended (in order); the bets depend only on earlier values."""
        x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        if x.size == 0:
            return self
        i = self.n + np.arange(1, x.size + 1, dtype=np.float64)  # 1-based positions in the whole stream
        sums = self.total + np.cumsum(x)
        before = np.concatenate(([self.total], sums[:-1]))  # sum of x_1 .. x_{i-1}
        mean_before = (0.5 + before) / i  # mu_hat_{i-1}, starting from 1/2
        mean_after = (0.5 + sums) / (i + 1)  # mu_hat_i
        sq = (x - mean_after) ** 2
        sq_sums = self.squares + np.cumsum(sq)
        sq_before = np.concatenate(([self.squares], sq_sums[:-1]))
        variance = (0.25 + sq_before) / i  # sigma_hat^2_{i-1}, starting from 1/4
        bet = np.minimum(np.sqrt(2 * math.log(1 / self.tuned_for) / (variance * i * np.log1p(i))), MAX_BET)
        psi = -np.log1p(-bet) - bet
        return replace(
            self,
            n=self.n + int(x.size),
            total=float(sums[-1]),
            squares=float(sq_sums[-1]),
            bets=self.bets + float(bet.sum()),
            bet_total=self.bet_total + float((bet * x).sum()),
            penalty=self.penalty + float(((x - mean_before) ** 2 * psi).sum()),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean}


def summarize(values: Sequence[float] | np.ndarray[Any, Any], tuned_for: float = 0.025) -> Summary:
    """The summary of a whole stream, bets tuned for `tuned_for` (the alpha each arm's bound uses)."""
    return Summary(tuned_for=tuned_for).extend(values)


@dataclass(frozen=True)
class Difference:
    """Always-valid bounds on harm = (candidate - production), or (production - candidate) when higher is better.

    `lower` holds with probability 1 - alpha_lower over all looks, `upper` with 1 - alpha_upper; each
    is a union bound over the two arms (each arm's one-sided bound at half the level).
    """

    estimate: float | None
    lower: float
    upper: float


def harm_bounds(
    production: Summary,
    candidate: Summary,
    *,
    higher_is_worse: bool,
    alpha_upper: float,
    alpha_lower: float,
) -> Difference:
    """Bounds on how much worse the candidate is than production (positive = worse)."""

    def arm(s: Summary, alpha: float, side: str) -> float:
        return s.bound(alpha / 2, side)

    if higher_is_worse:  # harm = c - p
        upper = arm(candidate, alpha_upper, "upper") - arm(production, alpha_upper, "lower")
        lower = arm(candidate, alpha_lower, "lower") - arm(production, alpha_lower, "upper")
    else:  # harm = p - c
        upper = arm(production, alpha_upper, "upper") - arm(candidate, alpha_upper, "lower")
        lower = arm(production, alpha_lower, "lower") - arm(candidate, alpha_lower, "upper")
    estimate = None
    if production.mean is not None and candidate.mean is not None:
        estimate = candidate.mean - production.mean if higher_is_worse else production.mean - candidate.mean
    return Difference(estimate, lower, upper)
