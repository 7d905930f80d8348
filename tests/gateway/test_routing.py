"""Routing decisions are pure functions: weights, sticky canary, attempt plans, balancing, the breaker."""

from __future__ import annotations

import random
from collections import Counter

from corral.gateway.routing import Attempt, Breaker, attempt_plan, choose_route, least_loaded, sticky_bucket


def test_canary_assignment_is_sticky_per_user():
    for user in (f"user-{i}" for i in range(200)):
        first = choose_route([90, 10], "canary", sticky_key=user, rand=random.random(), salt="support")
        for _ in range(5):
            assert (
                choose_route([90, 10], "canary", sticky_key=user, rand=random.random(), salt="support")
                == first
            )


def test_canary_share_matches_the_canary_weight():
    picks = Counter(choose_route([90, 10], "canary", sticky_key=f"u{i}", rand=0.5) for i in range(20_000))
    assert 0.08 < picks[1] / 20_000 < 0.12


def test_canary_without_a_sticky_key_uses_the_random_draw():
    assert choose_route([90, 10], "canary", sticky_key=None, rand=0.05) == 1
    assert choose_route([90, 10], "canary", sticky_key=None, rand=0.5) == 0


def test_unavailable_canary_falls_back_to_production():
    user = next(f"u{i}" for i in range(1000) if sticky_bucket(f"u{i}") < 10)
    assert choose_route([90, 10], "canary", sticky_key=user, rand=0.0) == 1
    assert choose_route([90, 10], "canary", sticky_key=user, rand=0.0, available=[True, False]) == 0


def test_weighted_split_follows_weights_and_skips_unavailable_routes():
    rng = random.Random(7)
    picks = Counter(
        choose_route([1, 3], "weighted", sticky_key=None, rand=rng.random()) for _ in range(20_000)
    )
    assert 0.72 < picks[1] / 20_000 < 0.78
    assert {
        choose_route([1, 3], "weighted", sticky_key=None, rand=r / 10, available=[True, False])
        for r in range(10)
    } == {0}


def test_plan_retries_the_chosen_route_then_each_fallback():
    plan = attempt_plan(1, n_fallbacks=2, retries=1)
    assert plan == [Attempt("route", 1), Attempt("route", 1), Attempt("fallback", 0), Attempt("fallback", 1)]


def test_plan_skips_blocked_routes_but_never_plans_nothing():
    assert attempt_plan(0, 1, 2, blocked=[Attempt("route", 0)]) == [Attempt("fallback", 0)]
    everything = [Attempt("route", 0), Attempt("fallback", 0)]
    assert attempt_plan(0, 1, 0, blocked=everything) == everything


def test_least_loaded_prefers_idle_instances_and_rotates_ties():
    assert least_loaded([3, 1, 2]) == 1
    assert {least_loaded([0, 0, 0], start) for start in range(3)} == {0, 1, 2}


def test_breaker_opens_after_consecutive_failures_and_probes_once_after_reset():
    breaker = Breaker(failures=3, reset_s=10)
    for t in range(3):
        assert breaker.allows(t)
        breaker.record(False, t)
    assert not breaker.allows(5) and breaker.is_open(5)
    assert breaker.allows(13)  # half-open: one probe
    assert not breaker.allows(13.5)  # ...and only one
    breaker.record(False, 14)  # the probe failed: open again
    assert not breaker.allows(20)
    assert breaker.allows(24.5)
    breaker.record(True, 25)
    assert breaker.allows(25) and not breaker.is_open(25)


def test_a_success_resets_the_failure_count():
    breaker = Breaker(failures=2, reset_s=10)
    breaker.record(False, 0)
    breaker.record(True, 1)
    breaker.record(False, 2)
    assert breaker.allows(3)


def test_a_probe_that_never_reports_does_not_keep_the_breaker_open():
    breaker = Breaker(failures=1, reset_s=10)
    breaker.record(False, 0)
    assert breaker.allows(10)  # the probe goes out...
    breaker.abandon()  # ...and is cancelled (the client gave up): the next request probes
    assert breaker.allows(10.5)
    assert not breaker.allows(11)  # that probe is in flight
    assert breaker.allows(21)  # a probe silent for reset_s is given up on
    breaker.record(True, 22)
    assert not breaker.is_open(22)
