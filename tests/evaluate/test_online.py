"""Online evaluation: sampled live traces get judge scores as feedback
with their own source, evaluation traffic and already-scored traces are left alone."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from corral.config import Settings
from corral.errors import ConfigError
from corral.evaluate.online import OnlineEvaluator, sampled
from corral.store.lease import Lease
from corral.store.models import FeedbackRow, TraceRow

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_sampling_is_deterministic_and_close_to_the_rate():
    ids = [f"{i:032x}" for i in range(2000)]
    share = sum(sampled(t, 0.25) for t in ids) / len(ids)
    assert 0.2 < share < 0.3 and [sampled(t, 0.25) for t in ids] == [sampled(t, 0.25) for t in ids]
    assert all(sampled(t, 1.0) for t in ids)


def test_a_rule_needs_exactly_one_scorer_and_a_judge_route():
    with pytest.raises(ValidationError, match="either rubric"):
        Settings.model_validate({"evaluate": {"online": [{"deployment": "d"}]}})
    with pytest.raises(ValidationError, match="needs judge_url and judge_model"):
        Settings.model_validate({"evaluate": {"online": [{"deployment": "d", "rubric": "r"}]}})


def _trace(reg, n, deployment="support", meta=None, answer="fine"):
    with reg.store.session() as s:
        s.add(
            TraceRow(
                id=f"{n:032x}",
                at=NOW - timedelta(minutes=1),
                day="2026-12-01",
                deployment=deployment,
                endpoint="chat",
                request={"messages": [{"role": "user", "content": f"q{n}"}]},
                response={"choices": [{"message": {"role": "assistant", "content": answer}}]},
                status=200,
                meta=meta or {},
            )
        )


def _settings(**rule):
    return Settings.model_validate(
        {"evaluate": {"online": [{"deployment": "support", "sample_rate": 1.0, **rule}]}}
    )


def test_one_replica_stores_judge_scores_as_feedback_once(reg, answering):
    judge = answering(lambda body: "Score: 4")
    reg.prompts.register(
        "helpful", {"text": "Q: {{ question }} A: {{ answer }} Score 1-5:"}, tags={"min": 1, "max": 5}
    )
    for n in range(5):
        _trace(reg, n)
    _trace(reg, 10, meta={"source": "eval"})
    _trace(reg, 11, deployment="other")
    settings = _settings(rubric="helpful", judge_url=judge.url, judge_model="judge")
    first, second = OnlineEvaluator(settings, reg, holder="r1"), OnlineEvaluator(settings, reg, holder="r2")
    assert first.tick(NOW) == 5
    assert second.tick(NOW) == 0  # r1 holds the lease
    assert first.tick(NOW + timedelta(seconds=1)) == 0  # nothing new to score
    with reg.store.session() as s:
        rows = s.scalars(select(FeedbackRow)).all()
        assert {(r.source, r.score) for r in rows} == {("judge:helpful", 0.75)}
        assert sorted(r.trace_id for r in rows) == [f"{n:032x}" for n in range(5)]
    assert all(r["headers"].get("x-corral-source") == "eval" for r in judge.requests)
    first.stop()
    _trace(reg, 6)
    assert second.tick(NOW + timedelta(seconds=2)) == 1  # released on stop: r2 takes over at once


def test_metric_rules_score_without_a_judge_and_bad_rules_fail_at_start(reg):
    _trace(reg, 1, answer='{"ok": true}')
    _trace(reg, 2, answer="not json")
    evaluator = OnlineEvaluator(_settings(metric="json_valid"), reg, holder="r1")
    assert evaluator.tick(NOW) == 2
    with reg.store.session() as s:
        assert sorted((r.source, r.score) for r in s.scalars(select(FeedbackRow))) == [
            ("metric:json_valid", 0.0),
            ("metric:json_valid", 1.0),
        ]
    with pytest.raises(ConfigError, match=r"evaluate.online\[0\].metric: exact_match needs reference"):
        OnlineEvaluator(_settings(metric="exact_match"), reg)
    with pytest.raises(ConfigError, match=r"evaluate.online\[0\]: prompt 'ghost'"):
        OnlineEvaluator(_settings(rubric="ghost", judge_url="http://127.0.0.1:9/v1", judge_model="j"), reg)


def test_corral_serve_runs_online_evaluation_in_the_background_and_releases_the_lease(reg):
    from corral.cli.serve import _online_evaluation

    _trace(reg, 1, answer="[1, 2]")
    settings = Settings.model_validate(
        {
            "evaluate": {
                "online": [{"deployment": "support", "sample_rate": 1.0, "metric": "json_valid"}],
                "online_interval_s": 0.05,
                "online_lookback_s": 10 * 365 * 86400,
            }
        }
    )
    with _online_evaluation(settings):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with reg.store.session() as s:
                if s.scalars(select(FeedbackRow)).first() is not None:
                    break
            time.sleep(0.05)
        assert Lease(reg.store, "evaluate.online").holder_now() is not None
    with reg.store.session() as s:
        assert [(r.source, r.score) for r in s.scalars(select(FeedbackRow))] == [("metric:json_valid", 1.0)]
    assert Lease(reg.store, "evaluate.online").holder_now() is None
