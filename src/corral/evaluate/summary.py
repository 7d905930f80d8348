"""A run's summary: every metric's value with its interval, and paired differences between two runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from corral.evaluate import metrics as m
from corral.evaluate.outcome import Outcome
from corral.evaluate.stats import Difference, estimate, paired


def summarize(
    metrics: Sequence[m.Metric], outcomes: Sequence[Outcome], config: dict[str, Any]
) -> dict[str, Any]:
    """{metric: Estimate as a dict}, plus plain counts (`judge_unparsed`, `judge_failed`) where judged."""
    summary: dict[str, Any] = {}
    for metric in metrics:
        values = m.observe(metric, outcomes, config)
        summary[metric.name] = estimate(values, metric.aggregate, binary=metric.binary).as_dict()
    for key in ("judge_unparsed", "judge_failed"):
        count = sum(1 for o in outcomes if o.scores.get(key))
        if count or any(name.startswith("judge:") for name in summary):
            summary[key] = {
                "value": float(count),
                "low": None,
                "high": None,
                "n": len(outcomes),
                "method": "count",
            }
    return summary


def by_position(outcomes: Sequence[Outcome], positions: Sequence[int]) -> list[Outcome | None]:
    found = {o.position: o for o in outcomes}
    return [found.get(p) for p in positions]


def differences(
    metrics: Sequence[m.Metric],
    candidate: Sequence[Outcome],
    baseline: Sequence[Outcome],
    config: dict[str, Any],
) -> dict[str, Difference]:
    """Candidate minus baseline per metric, items paired by their position in the split."""
    positions = sorted({o.position for o in candidate} | {o.position for o in baseline})
    cand, base = by_position(candidate, positions), by_position(baseline, positions)
    out: dict[str, Difference] = {}
    for metric in metrics:
        c_values = [None if o is None else metric.observe(o, config) for o in cand]
        b_values = [None if o is None else metric.observe(o, config) for o in base]
        out[metric.name] = paired(c_values, b_values, metric.aggregate)
    return out
