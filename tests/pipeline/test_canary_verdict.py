"""The canary verdict: each outcome, and its error rates under repeated looks, over simulated canaries."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from corral.errors import ConfigError
from corral.pipeline.canary import ArmStats, CanarySpec, Margins, verdict
from corral.pipeline.canary_stats import Summary, summarize

ALPHA = 0.05
ERRORS_ONLY = CanarySpec(
    min_samples=200, max_duration_s=3600, margins=Margins(error_rate=0.02, latency_p95=None, feedback=None)
)
PER_CHECK = 400  # requests between two checks, split by the candidate's share


def simulate(
    spec: CanarySpec,
    production: dict[str, float],
    candidate: dict[str, float],
    rng: np.random.Generator,
    checks: int = 60,
) -> tuple[str, int, float]:
    """One canary, a check a minute: (outcome or 'none', checks taken, the largest share reached).

    Each metric is Bernoulli with the given mean (errors, slow requests, thumbs up). The share follows
    the verdicts, as the controller would move it.
    """
    arms = {
        arm: {m: Summary(tuned_for=spec.alpha / 2) for m in means}
        for arm, means in (("p", production), ("c", candidate))
    }
    step, step_requests, requests = 0, 0, {"p": 0, "c": 0}
    for k in range(1, checks + 1):
        n_c = round(PER_CHECK * spec.share(step) / 100)
        for arm, n, means in (("p", PER_CHECK - n_c, production), ("c", n_c, candidate)):
            requests[arm] += n
            for metric, mean in means.items():
                arms[arm][metric] = arms[arm][metric].extend((rng.random(n) < mean).astype(float))
        step_requests += n_c
        v = verdict(
            ArmStats("m@1", requests["p"], 0, arms["p"]),
            ArmStats("m@2", requests["c"], step_requests, arms["c"]),
            spec,
            k * 60.0,
            step,
        )
        if v.action in ("promote", "rollback"):
            return v.action, k, spec.share(step)
        if v.action == "advance":
            step, step_requests = step + 1, 0
    return "none", checks, spec.share(step)


def outcomes(
    spec: CanarySpec, production: dict[str, float], candidate: dict[str, float], runs: int, seed: int
):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return [simulate(spec, production, candidate, rng) for _ in range(runs)]


def test_a_candidate_worse_by_exactly_the_margin_is_promoted_at_most_alpha_of_the_time():
    runs = outcomes(ERRORS_ONLY, {"error_rate": 0.02}, {"error_rate": 0.04}, runs=1000, seed=1)
    promoted = sum(o == "promote" for o, _, _ in runs) / len(runs)
    print(f"false promotions at the margin (error rate, 1000 runs, ~30 looks each): {promoted:.3%}")
    assert promoted <= ALPHA


def test_at_the_feedback_margin_with_every_other_metric_equal_promotion_stays_within_alpha():
    spec = replace(ERRORS_ONLY, margins=Margins(error_rate=0.02, latency_p95=0.05, feedback=0.1))
    same = {"error_rate": 0.01, "latency_p95": 0.05}
    runs = outcomes(spec, {**same, "feedback": 0.8}, {**same, "feedback": 0.7}, runs=300, seed=2)
    promoted = sum(o == "promote" for o, _, _ in runs) / len(runs)
    print(f"false promotions at the margin (feedback, 300 runs): {promoted:.3%}")
    assert promoted <= ALPHA


def test_a_candidate_no_different_from_production_is_promoted():
    runs = outcomes(ERRORS_ONLY, {"error_rate": 0.02}, {"error_rate": 0.02}, runs=200, seed=3)
    promoted = sum(o == "promote" for o, _, _ in runs) / len(runs)
    print(f"no-difference candidates promoted: {promoted:.1%}")
    assert promoted >= 0.95


def test_a_clearly_harmful_candidate_is_rolled_back_before_the_maximum_duration_at_its_first_share():
    runs = outcomes(ERRORS_ONLY, {"error_rate": 0.02}, {"error_rate": 0.3}, runs=100, seed=4)
    assert all(o == "rollback" for o, _, _ in runs)
    assert max(k for _, k, _ in runs) * 60 < ERRORS_ONLY.max_duration_s / 4
    assert {share for _, _, share in runs} == {5.0}  # users never saw more than the first step


def test_without_evidence_the_maximum_duration_rolls_back():
    spec = replace(ERRORS_ONLY, max_duration_s=600)
    nothing = ArmStats("m@1", 0, 0, {})
    assert verdict(nothing, nothing, spec, 599, 0).action == "hold"
    late = verdict(nothing, nothing, spec, 600, 0)
    assert late.action == "rollback" and "max duration" in late.reasons[0]


def _arms(n_p: int, n_c: int, p: float = 0.02, c: float = 0.02, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    prod = ArmStats("m@1", n_p, 0, {"error_rate": summarize(rng.random(n_p) < p, ALPHA / 2)})
    cand = ArmStats("m@2", n_c, n_c, {"error_rate": summarize(rng.random(n_c) < c, ALPHA / 2)})
    return prod, cand


def test_min_samples_hold_back_promotion_and_advancing_even_with_spotless_data():
    spec = replace(ERRORS_ONLY, min_samples=500)
    prod, cand = _arms(20000, 499, p=0.0, c=0.0)
    early = verdict(prod, cand, spec, 60, 0)
    assert early.action == "hold"
    assert any("500 needed" in r for r in early.reasons)
    prod, cand = _arms(20000, 500, p=0.0, c=0.0)
    assert verdict(prod, cand, spec, 60, 0).action == "promote"


def test_enough_candidate_requests_at_a_step_without_proof_yet_advance_the_share():
    spec = replace(ERRORS_ONLY, min_samples=100)
    prod, cand = _arms(4000, 200, seed=5)
    v = verdict(prod, cand, spec, 60, 0)
    assert v.action == "advance", v.reasons
    assert v.numbers["metrics"]["error_rate"]["harm_upper"] >= 0.02
    assert verdict(prod, replace(cand, step_requests=50), spec, 60, 0).action == "hold"


def test_the_share_does_not_go_to_100_percent_before_production_has_its_samples():
    # at 100% production gets nothing more: it would never reach min_samples, and the canary would time out
    spec = replace(ERRORS_ONLY, steps=(50, 100), min_samples=40)
    prod, cand = _arms(34, 42, p=0.0, c=0.0)
    v = verdict(prod, cand, spec, 60, 0)
    assert v.action == "hold" and "production needs 40 samples" in v.reasons[0]
    prod, cand = _arms(40, 42, p=0.0, c=0.0)
    assert verdict(prod, cand, spec, 60, 0).action in ("advance", "promote")
    assert (
        verdict(*_arms(34, 42, p=0.0, c=0.0), replace(spec, steps=(25, 50, 100)), 60, 0).action == "advance"
    )


def test_harm_rolls_back_at_once_even_before_min_samples():
    prod, cand = _arms(4000, 60, p=0.01, c=0.9, seed=6)
    v = verdict(prod, cand, ERRORS_ONLY, 60, 0)
    assert v.action == "rollback" and "error_rate" in v.reasons[0]
    assert v.numbers["metrics"]["error_rate"]["harm_lower"] > 0


def test_promote_early_off_waits_for_the_last_step():
    spec = replace(ERRORS_ONLY, promote_early=False)
    prod, cand = _arms(20000, 5000, seed=7)
    assert verdict(prod, cand, ERRORS_ONLY, 60, 0).action == "promote"
    assert verdict(prod, cand, spec, 60, 0).action == "advance"
    assert verdict(prod, cand, spec, 60, len(spec.steps) - 1).action == "promote"


def test_the_numbers_carry_each_metric_with_its_bounds_and_margin():
    prod, cand = _arms(5000, 1000, seed=8)
    v = verdict(prod, cand, ERRORS_ONLY, 120, 1)
    row = v.numbers["metrics"]["error_rate"]
    assert set(row) == {"production", "candidate", "harm", "harm_lower", "harm_upper", "margin"}
    assert row["harm_lower"] <= row["harm"] <= row["harm_upper"]
    assert (v.numbers["share"], v.numbers["step_index"], v.numbers["elapsed_s"]) == (25.0, 1, 120)


def test_a_metric_without_data_cannot_support_a_promotion():
    spec = replace(ERRORS_ONLY, margins=Margins(error_rate=0.02, latency_p95=None, feedback=0.1))
    prod, cand = _arms(20000, 5000, seed=9)
    v = verdict(prod, cand, spec, 60, 3)
    assert v.action == "hold" and any(r.startswith("feedback: 0 production") for r in v.reasons)


def test_the_bounds_hold_over_every_look_for_rare_events():
    rng = np.random.default_rng(10)
    misses = 0
    for _ in range(200):
        s = Summary(tuned_for=0.025)
        missed = False
        for chunk in np.split(rng.random(4000) < 0.01, 80):
            s = s.extend(chunk)
            missed = missed or not s.bound(0.025, "lower") <= 0.01 <= s.bound(0.025, "upper")
        misses += missed
    assert misses / 200 <= 0.05


def test_a_summary_built_in_chunks_equals_one_built_at_once():
    values = np.random.default_rng(11).random(1000)
    whole = summarize(values)
    parts = summarize(values[:137]).extend(values[137:600]).extend(values[600:])
    assert parts.n == whole.n
    for name in ("total", "squares", "bets", "bet_total", "penalty"):
        assert getattr(parts, name) == pytest.approx(getattr(whole, name))


def test_spec_from_a_mapping():
    spec = CanarySpec.from_mapping(
        {"steps": [10, 50, 100], "min_samples": 50, "alpha": 0.1, "check_interval_s": 5,
         "margins": {"error_rate": 0.05, "feedback": None, "online": 0.05}, "online_source": "metric:exact_match"}
    )  # fmt: skip
    assert spec.steps == (10.0, 50.0, 100.0)
    assert spec.margins.active() == {"error_rate": 0.05, "latency_p95": 0.05, "online": 0.05}
    assert CanarySpec.from_mapping(None) == CanarySpec()


@pytest.mark.parametrize(
    ("mapping", "field"),
    [
        ({"steps": [50, 25]}, "steps"),
        ({"steps": [5, 120]}, "steps"),
        ({"steps": "5,25"}, "steps"),
        ({"stepz": [5]}, "stepz"),
        ({"min_samples": "100"}, "min_samples"),
        ({"min_samples": 0}, "min_samples"),
        ({"alpha": 0.7}, "alpha"),
        ({"check_interval_s": -1}, "check_interval_s"),
        ({"promote_early": "yes"}, "promote_early"),
        ({"margins": {"latency_p95_ms": 50}}, "margins.latency_p95_ms"),
        ({"margins": {"error_rate": 2}}, "margins.error_rate"),
        ({"margins": {"error_rate": None, "latency_p95": None, "feedback": None}}, "margins"),
        ({"margins": {"online": 0.05}}, "online_source"),
    ],
)
def test_a_bad_spec_names_the_field(mapping, field):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=f"canary field '{field}'"):
        CanarySpec.from_mapping(mapping)
