"""`compare` two stored runs item by item, and `gate` a candidate against its baseline."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from corral.errors import InvalidInputError
from corral.evaluate import metrics as m
from corral.evaluate import runs
from corral.evaluate.gates import Gate, GateVerdict, load_gate, verdict
from corral.evaluate.runner import RunOptions, run
from corral.evaluate.runs import EvalRun
from corral.evaluate.stats import Difference
from corral.evaluate.summary import differences
from corral.registry import Registry, parse_ref


@dataclass(frozen=True)
class Comparison:
    candidate: EvalRun
    baseline: EvalRun
    differences: dict[str, Difference]


def compare_runs(candidate: EvalRun, baseline: EvalRun) -> Comparison:
    """Paired differences (candidate − baseline) on the metrics both runs measured."""
    if (candidate.dataset, candidate.split) != (baseline.dataset, baseline.split):
        raise InvalidInputError(
            f"runs {candidate.id[:8]} and {baseline.id[:8]} are on different data "
            f"({candidate.dataset}:{candidate.split} vs {baseline.dataset}:{baseline.split}); "
            "paired comparison needs the same dataset version and split"
        )
    shared = [name for name in candidate.metrics if name in baseline.metrics]
    chosen = m.resolve(shared) if shared else []
    diffs = differences(chosen, candidate.outcomes, baseline.outcomes, candidate.config)
    return Comparison(candidate, baseline, diffs)


def compare(candidate_id: str, baseline_id: str, *, registry: Registry | None = None) -> Comparison:
    """Compare two stored runs by id."""
    registry = registry or _registry()
    return compare_runs(runs.load(registry.store, candidate_id), runs.load(registry.store, baseline_id))


@dataclass(frozen=True)
class GateOutcome:
    gate: Gate
    verdict: GateVerdict
    candidate: EvalRun
    comparison: Comparison | None  # None when no rule names the baseline

    @property
    def passed(self) -> bool:
        return self.verdict.passed


def baseline_ref(candidate: str, against: str) -> str:
    """`against` is an alias of the candidate's model (production) or any model reference."""
    if "@" in against:
        return against
    return f"{parse_ref(candidate).name}@{against}"


def gate(
    candidate: str,
    gate_spec: Gate | str | Path,
    *,
    registry: Registry | None = None,
    options: RunOptions | None = None,
) -> GateOutcome:
    """Evaluate the candidate and its baseline (reusing stored runs of the same config) and decide."""
    registry = registry or _registry()
    spec = gate_spec if isinstance(gate_spec, Gate) else load_gate(gate_spec)
    names = list(dict.fromkeys([*(r.metric for r in spec.rules), *spec.metrics]))
    m.resolve(names)  # an unknown metric in a rule is a bad gate, found before any request
    options = replace(options or RunOptions(), split=spec.split, reuse=True)
    baseline_version = registry.models.resolve(baseline_ref(candidate, spec.against))
    cand = run(candidate, spec.dataset, names, registry=registry, options=options)
    if not any(rule.uses_baseline for rule in spec.rules):  # constant thresholds only: no baseline run
        return GateOutcome(spec, verdict(spec.rules, cand.summary, {}), cand, None)
    base = run(baseline_version.ref, spec.dataset, names, registry=registry, options=options)
    comparison = compare_runs(cand, base)
    decided = verdict(spec.rules, cand.summary, base.summary, comparison.differences)
    return GateOutcome(spec, decided, cand, comparison)


def _registry() -> Registry:
    from corral.registry import open_registry

    return open_registry()
