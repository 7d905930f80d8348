"""Runs and items stored and read back on SQLite and PostgreSQL; reuse by config; scores updated."""

from __future__ import annotations

import pytest

from corral.errors import NotFoundError
from corral.evaluate import runs
from corral.evaluate.outcome import Outcome
from corral.evaluate.runs import EvalRun


def _run(run_id: str, config: dict | None = None, status: str = "complete") -> EvalRun:
    outcomes = [
        Outcome(0, {"messages": [{"role": "user", "content": "q0"}]}, "a0", "a0", 12.5, 3.0, 4, 2, 0.001),
        Outcome(
            1, {"messages": [{"role": "user", "content": "q1"}]}, "a1", None, 30.0, error="HTTP 503: busy"
        ),
    ]
    run = EvalRun(
        run_id,
        "svc@1",
        "model",
        "qa@1",
        "test",
        ["exact_match"],
        config or {"metrics": ["exact_match"]},
        {"exact_match": {"value": 1.0, "low": 0.2, "high": 1.0, "n": 1, "method": "wilson"}},
        status,
        outcomes,
        duration_s=1.5,
        created_by="tester",
    )
    run.count()
    return run


def test_a_run_and_its_items_round_trip(store):
    runs.save(store, _run("a" * 32))
    loaded = runs.load(store, "aaaaaa")
    assert (loaded.item_count, loaded.error_count, loaded.status) == (2, 1, "complete")
    assert loaded.summary["exact_match"]["low"] == 0.2 and loaded.config == {"metrics": ["exact_match"]}
    first, failed = loaded.outcomes
    assert (first.prediction, first.reference, first.ttft_ms, first.completion_tokens) == ("a0", "a0", 3.0, 2)
    assert failed.error == "HTTP 503: busy" and not failed.ok
    with pytest.raises(NotFoundError, match="no evaluation run 'bbbbbb'"):
        runs.load(store, "bbbbbb")


def test_only_a_complete_run_with_the_same_config_is_reused(store):
    runs.save(store, _run("a" * 32))
    runs.save(store, _run("b" * 32, {"metrics": ["exact_match"], "max_tokens": 8}))
    runs.save(store, _run("c" * 32, {"metrics": ["bleu"]}, status="interrupted"))
    assert runs.reusable(store, "svc@1", "qa@1", "test", {"metrics": ["exact_match"]}) == "a" * 32
    assert runs.reusable(store, "svc@1", "qa@1", "test", {"metrics": ["bleu"]}) is None
    assert runs.reusable(store, "svc@2", "qa@1", "test", {"metrics": ["exact_match"]}) is None
    assert len(runs.runs_of(store, "svc@1")) == 3


def test_scores_added_later_are_written_back(store):
    run = _run("a" * 32)
    runs.save(store, run)
    run.outcomes[0].scores["human:x"] = 0.5
    run.summary["human:x"] = {"value": 0.5}
    run.metrics = [*run.metrics, "human:x"]
    runs.update_scores(store, run)
    loaded = runs.load(store, run.id)
    assert loaded.outcomes[0].scores == {"human:x": 0.5} and "human:x" in loaded.metrics
