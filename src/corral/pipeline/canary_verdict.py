"""The canary's decision as a pure function: per-arm statistics in, promote / roll back / advance / hold out.

It is a non-inferiority decision on every configured metric, with always-valid bounds (see
`canary_stats`), so it may be asked at every check without inflating its error:

- **roll back** as soon as any metric's lower bound on harm is above 0 (the candidate is worse, with
  confidence, at any sample size), or when `max_duration_s` passes without a promotion;
- **promote** once every metric has `min_samples` on both arms and its upper bound on harm is below
  its margin (the candidate is at most `margin` worse, with confidence 1 - alpha). By default this
  may happen at any step: an always-valid bound is as good at 5% as at 50%, and the steps only exist
  to collect evidence faster while any harm stays bounded. `promote_early: false` waits for the last step;
- **advance** to the next step once the current one has `min_samples` candidate requests and no
  metric's estimate of harm exceeds its margin, but not to 100% before production has `min_samples`
  (from there on it gets no requests, so it never would); otherwise **hold**.

Metrics, all in [0, 1], harm positive when the candidate is worse:

- `error_rate`: share of requests answered 5xx (4xx are the caller's: auth, limits, bad input);
  harm = candidate - production, margin absolute (0.02 = two more failures per hundred requests).
- `latency_p95`: share of successful requests slower than production's p95, a threshold fixed before
  the comparison (a set `latency_threshold_ms`, production's p95 before the canary, or of its first
  `min_samples` canary requests, which then leave the comparison). About 5% of production's requests
  exceed it; harm = candidate's rate - production's, margin absolute (0.05: at most 5 more requests in
  100 slower than production's p95, so the candidate's p90 is at most about production's p95).
  Comparing exceedance rates keeps each observation a bounded, independent value, which a quantile
  of the data itself would not be.
- `feedback`: user feedback scores; harm = production's mean - candidate's (a drop), margin absolute.
- `online`: an online evaluation score (feedback with source `online_source`, e.g. `metric:exact_match`);
  harm = production - candidate.

Promotion needs every metric to pass, so a candidate exactly `margin` worse on one metric is promoted
at most alpha of the time (an intersection-union test). Roll-back bounds use alpha / (number of
metrics), so a no-difference candidate is wrongly rolled back at most alpha of the time overall.
Observations are treated as independent: stickiness by user makes one user's requests correlated, so
many users per arm (not a handful of heavy ones) keep the stated levels honest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from corral.errors import ConfigError
from corral.pipeline.canary_stats import Summary, harm_bounds

# metric -> whether a higher value is worse (errors, slow requests) or better (scores)
HIGHER_IS_WORSE = {"error_rate": True, "latency_p95": True, "feedback": False, "online": False}
ACTIONS = ("promote", "rollback", "advance", "hold")


@dataclass(frozen=True)
class Margins:
    """How much worse than production the candidate may be, per metric; None leaves a metric out."""

    error_rate: float | None = 0.02
    latency_p95: float | None = 0.05
    feedback: float | None = 0.1
    online: float | None = None

    def active(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class CanarySpec:
    """How a canary runs: its share steps, check cadence, evidence needed and limits (see module doc)."""

    steps: tuple[float, ...] = (5, 25, 50, 100)
    check_interval_s: float = 60.0
    min_samples: int = 200
    max_duration_s: float = 4 * 3600.0
    margins: Margins = field(default_factory=Margins)
    alpha: float = 0.05
    promote_early: bool = True
    online_source: str | None = None  # the feedback source of the online metric, e.g. metric:exact_match
    feedback_source: str = "user"
    latency_threshold_ms: float | None = None  # fixed; else production's p95
    latency_baseline_s: float = 3600.0  # production traffic before the canary that sets its p95
    drain_timeout_s: float = 300.0  # how long the controller waits for the old version to drain

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
            _bad(
                "steps",
                f"{list(self.steps)} must be increasing percentages in (0, 100], e.g. [5, 25, 50, 100]",
            )
        for name in ("check_interval_s", "max_duration_s", "latency_baseline_s", "drain_timeout_s"):
            if not getattr(self, name) > 0:
                _bad(name, f"{getattr(self, name)} must be above 0 seconds")
        if (
            isinstance(self.min_samples, bool)
            or not isinstance(self.min_samples, int)
            or self.min_samples < 1
        ):
            _bad("min_samples", f"{self.min_samples!r} must be a whole number of at least 1")
        if not 0 < self.alpha < 0.5:
            _bad("alpha", f"{self.alpha} must be between 0 and 0.5, e.g. 0.05")
        for name, margin in self.margins.active().items():
            if not 0 < margin < 1:
                _bad(
                    f"margins.{name}",
                    f"{margin} must be between 0 and 1 (an absolute difference of rates or scores)",
                )
        if not self.margins.active():
            _bad(
                "margins",
                "every margin is off; set at least one of error_rate, latency_p95, feedback, online",
            )
        if self.margins.online is not None and not self.online_source:
            _bad(
                "online_source", "margins.online needs the feedback source it reads, e.g. metric:exact_match"
            )
        if self.latency_threshold_ms is not None and not self.latency_threshold_ms > 0:
            _bad("latency_threshold_ms", f"{self.latency_threshold_ms} must be above 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> CanarySpec:
        """A spec from a YAML mapping (e.g. a pipeline file's `canary:`); errors name the field."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            _bad(unknown[0], f"unknown field; known: {', '.join(sorted(known))}")
        values: dict[str, Any] = {}
        for name, raw in data.items():
            if name == "margins":
                values[name] = _margins(raw)
            elif name == "steps":
                if not isinstance(raw, list | tuple) or not all(_is_number(s) for s in raw):
                    _bad("steps", f"{raw!r} must be a list of percentages, e.g. [5, 25, 50, 100]")
                values[name] = tuple(raw)
            else:
                values[name] = _typed(name, raw, cls._types()[name])
        return cls(**values)

    @staticmethod
    def _types() -> dict[str, tuple[type, ...]]:
        number, text, flag = (int, float), (str,), (bool,)
        return {
            "check_interval_s": number, "min_samples": (int,), "max_duration_s": number, "alpha": number,
            "promote_early": flag, "online_source": text, "feedback_source": text,
            "latency_threshold_ms": number, "latency_baseline_s": number, "drain_timeout_s": number,
        }  # fmt: skip

    def share(self, step_index: int) -> float:
        return self.steps[min(step_index, len(self.steps) - 1)]


def _bad(name: str, why: str) -> None:
    raise ConfigError(f"canary field '{name}': {why}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _typed(name: str, raw: Any, types: tuple[type, ...]) -> Any:
    if raw is None and name in ("online_source", "latency_threshold_ms"):
        return None
    if bool in types:
        if not isinstance(raw, bool):
            _bad(name, f"{raw!r} must be true or false")
    elif str in types:
        if not isinstance(raw, str) or not raw:
            _bad(name, f"{raw!r} must be a non-empty string")
    elif types == (int,):
        if isinstance(raw, bool) or not isinstance(raw, int):
            _bad(name, f"{raw!r} must be a whole number")
    elif not _is_number(raw):
        _bad(name, f"{raw!r} must be a number")
    return raw


def _margins(raw: Any) -> Margins:
    if not isinstance(raw, Mapping):
        _bad("margins", f"{raw!r} must be a mapping, e.g. {{error_rate: 0.02, feedback: 0.1}}")
    known = {f.name for f in fields(Margins)}
    for key, value in raw.items():
        if key not in known:
            _bad(f"margins.{key}", f"unknown metric; known: {', '.join(sorted(known))}")
        if value is not None and not _is_number(value):
            _bad(f"margins.{key}", f"{value!r} must be a number, or null to leave the metric out")
    return Margins(**raw)


@dataclass(frozen=True)
class ArmStats:
    """One arm of the canary: its version, requests (all, and since the current step), metric summaries."""

    version: str
    requests: int = 0
    step_requests: int = 0
    metrics: Mapping[str, Summary] = field(default_factory=dict)

    def summary(self, metric: str) -> Summary:
        return self.metrics.get(metric) or Summary()

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "step_requests": self.step_requests,
            "metrics": {name: s.as_dict() for name, s in self.metrics.items()},
        }


@dataclass(frozen=True)
class Verdict:
    """What to do now, why (one line per reason) and the numbers behind it (JSON-ready)."""

    action: str  # promote | rollback | advance | hold
    reasons: tuple[str, ...]
    numbers: dict[str, Any]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def production_short(production: ArmStats, active: dict[str, float], spec: CanarySpec) -> bool:
    """Whether production has fewer than `min_samples` on any active metric."""
    return any(production.summary(name).n < spec.min_samples for name in active)


def verdict(
    production: ArmStats, candidate: ArmStats, spec: CanarySpec, elapsed_s: float, step_index: int
) -> Verdict:
    """The decision at one check (see the module docstring for the rules and what they guarantee)."""
    active = spec.margins.active()
    last = step_index >= len(spec.steps) - 1
    rows: dict[str, Any] = {}
    harmful, short, unproven, drifting = [], [], [], []
    for name, margin in active.items():
        p, c = production.summary(name), candidate.summary(name)
        d = harm_bounds(
            p,
            c,
            higher_is_worse=HIGHER_IS_WORSE[name],
            alpha_upper=spec.alpha,
            alpha_lower=spec.alpha / len(active),
        )
        rows[name] = {
            "production": {"n": p.n, "mean": _round(p.mean)},
            "candidate": {"n": c.n, "mean": _round(c.mean)},
            "harm": _round(d.estimate), "harm_lower": _round(d.lower), "harm_upper": _round(d.upper),
            "margin": margin,
        }  # fmt: skip
        if d.lower > 0:
            harmful.append(
                f"{name}: the candidate is worse by at least {d.lower:.4g} (always-valid lower bound)"
            )
        if min(p.n, c.n) < spec.min_samples:
            short.append(
                f"{name}: {p.n} production and {c.n} candidate samples, {spec.min_samples} needed on each"
            )
        elif d.upper >= margin:
            unproven.append(f"{name}: harm could still be {d.upper:.4g}, not yet below the margin {margin:g}")
        if d.estimate is not None and d.estimate > margin:
            drifting.append(f"{name}: estimated harm {d.estimate:.4g} is above the margin {margin:g}")
    numbers = {
        "elapsed_s": round(elapsed_s, 3),
        "step_index": step_index,
        "share": spec.share(step_index),
        "alpha": spec.alpha,
        "requests": {"production": production.requests, "candidate": candidate.requests},
        "step_requests": candidate.step_requests,
        "metrics": rows,
    }

    def out(action: str, reasons: list[str]) -> Verdict:
        return Verdict(action, tuple(reasons), numbers)

    if harmful:
        return out("rollback", harmful)
    if not short and not unproven:
        if spec.promote_early or last:
            return out("promote", [f"every margin is met with confidence {1 - spec.alpha:g}"])
        unproven.append(f"evidence is in, but promote_early is off: waiting for step {len(spec.steps)}")
    if elapsed_s >= spec.max_duration_s:
        return out(
            "rollback",
            [f"max duration {spec.max_duration_s:g} s passed without a promotion", *short, *unproven],
        )
    # at 100% production gets no more requests: going there before it has its samples would starve it
    starving = not last and spec.share(step_index + 1) >= 100 and production_short(production, active, spec)
    if not last and candidate.step_requests >= spec.min_samples and not drifting and not starving:
        return out("advance", [f"{candidate.step_requests} candidate requests at {spec.share(step_index):g}% and no harm seen",
                               f"next share {spec.share(step_index + 1):g}%"])  # fmt: skip
    waiting = drifting or short or unproven
    if starving and candidate.step_requests >= spec.min_samples:
        waiting = [
            f"production needs {spec.min_samples} samples before the candidate takes every user",
            *waiting,
        ]
    if not last and candidate.step_requests < spec.min_samples:
        waiting = [
            f"{candidate.step_requests} of {spec.min_samples} candidate requests at this step",
            *waiting,
        ]
    return out("hold", waiting)
