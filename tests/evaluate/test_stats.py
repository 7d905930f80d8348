"""Intervals and paired tests: Wilson for 0/1 means, bootstrap otherwise, paired bootstrap, permutation p."""

from __future__ import annotations

import math
import statistics

import pytest

from corral.evaluate.stats import estimate, paired, wilson


def _mean(values):
    return statistics.fmean(values)


def test_wilson_interval_matches_hand_computed_values():
    low, high = wilson(159, 159)
    assert low == pytest.approx(159 / (159 + 1.959963984540054**2)) and high == 1.0
    low, high = wilson(8, 10)  # textbook: 0.490 to 0.943
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_all_correct_binary_metric_keeps_a_real_interval():
    est = estimate([1.0] * 50, _mean, binary=True)
    assert est.value == 1.0 and est.method == "wilson" and est.low < 0.95 and est.high == 1.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [float(i % 7) for i in range(60)]
    first, again = estimate(values, _mean, binary=False), estimate(values, _mean, binary=False)
    assert first == again and first.method == "bootstrap"
    assert first.low < first.value < first.high
    constant = estimate([2.5] * 10, _mean, binary=False)
    assert (constant.low, constant.high) == (2.5, 2.5)


def test_missing_observations_are_left_out():
    est = estimate([1.0, None, 0.0, None], _mean, binary=True)
    assert est.n == 2 and est.value == 0.5


def test_paired_identical_runs_differ_by_zero_with_p_one():
    values = [float(i % 2) for i in range(40)]
    diff = paired(values, values, _mean)
    assert diff.diff == 0.0 and (diff.low, diff.high) == (0.0, 0.0) and diff.p_value == 1.0


def test_paired_clear_improvement_is_significant_and_interval_excludes_zero():
    cand = [1.0] * 30 + [0.0] * 10
    base = [0.0] * 30 + [0.0] * 10
    diff = paired(cand, base, _mean)
    assert diff.diff == pytest.approx(0.75)
    assert diff.low > 0 and diff.p_value < 0.01 and diff.n == 40


def test_paired_drops_items_missing_on_either_side():
    diff = paired([1.0, None, 1.0], [0.0, 1.0, None], _mean)
    assert diff.n == 1 and diff.diff == 1.0
