"""Rollups agree with the raw traces: counts exactly, percentiles within the sketch's stated error."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from corral.monitor.report import cover, report, requests_per_bucket, series, series_and_total
from corral.monitor.rollup import RollupJob, count_regenerations
from corral.monitor.sketch import RELATIVE_ERROR, LogHistogram, Sketches, nearest_rank
from corral.monitor.windows import sample_window
from corral.store.models import TraceRow
from corral.testing.traffic import insert_feedback, insert_traces, synthetic_traces, trace_row

START = datetime(2026, 11, 30, 22, 17, tzinfo=UTC)
NOW = START + timedelta(hours=30)


def test_histogram_quantiles_are_within_the_stated_error_and_merge_exactly():
    rng = random.Random(1)
    values = [rng.lognormvariate(4, 1.2) for _ in range(5000)] + [0.0] * 5
    whole = LogHistogram.of(values)
    halves = LogHistogram.of(values[:2000]).merge(LogHistogram.of(values[2000:]))
    assert halves.counts == whole.counts
    for q in (0.01, 0.5, 0.95, 0.99, 1.0):
        exact = nearest_rank(values, q)
        assert exact is not None
        assert abs(whole.quantile(q) - exact) <= RELATIVE_ERROR * exact + 1e-9  # type: ignore[operator]
    assert LogHistogram().quantile(0.5) is None


def test_quantiles_at_the_zero_bucket_and_below_one_millisecond():
    hist = LogHistogram.of([0.0, 0.0, 0.4, 5.0])
    assert hist.quantiles((0.25, 0.5, 0.75, 1.0)) == [0.0, 0.0, pytest.approx(0.4, rel=RELATIVE_ERROR),
                                                       pytest.approx(5.0, rel=RELATIVE_ERROR)]  # fmt: skip


def test_sketches_give_each_groups_merged_quantiles_from_the_stored_json(monkeypatch):
    rng = random.Random(7)
    hists = [
        LogHistogram.of([rng.lognormvariate(rng.uniform(-1, 6), 1.3) for _ in range(rng.randint(0, 300))]
                        + [0.0] * rng.randint(0, 3))
        for _ in range(60)
    ] + [LogHistogram.of([0.0, 0.0]), LogHistogram()]  # fmt: skip
    groups = [rng.randrange(8) for _ in hists[:-2]] + [8, 8]
    texts: list[Any] = [json.dumps(h.to_json()) for h in hists]
    texts[0] = hists[0].to_json()  # a parsed dict is taken too
    qs = (0.01, 0.5, 0.95, 0.99, 1.0)
    got = Sketches(texts).quantiles(groups, 10, qs)
    for g in range(10):
        merged = LogHistogram()
        for hist, group in zip(hists, groups, strict=True):
            if group == g:
                merged.merge(hist)
        want = merged.quantiles(qs)
        assert got[g] == (pytest.approx(want, rel=1e-12) if merged.total else want)
    assert got[8] == [0.0] * 5 and got[9] == [None] * 5
    # JSON in another form than to_json writes (here: counts as floats) is read the slow way, same answer
    odd = [json.dumps({k: float(v) for k, v in h.to_json().items()}) for h in hists]
    assert Sketches(odd).quantiles(groups, 10, qs) == got
    monkeypatch.setattr("corral.monitor.sketch._DENSE_CELLS", 0)  # many groups: only the cells present
    assert Sketches(texts).quantiles(groups, 10, qs) == got


def test_cover_tiles_a_range_with_days_in_the_middle_and_minutes_at_the_edges():
    pieces = cover(START, NOW)
    assert [g for g, _, _ in pieces] == ["m", "h", "d", "h", "m"] or [g for g, _, _ in pieces].count("d") == 1
    assert pieces[0][1] == START and pieces[-1][2] == NOW
    for (_, _, end), (_, start, _) in zip(pieces, pieces[1:], strict=False):
        assert end == start


def test_regeneration_is_the_same_question_again_within_the_window():
    t0 = START
    rows = [
        trace_row("a", t0, "d", prompt="hello", user="u1"),
        trace_row("b", t0 + timedelta(seconds=30), "d", prompt="hello", user="u1"),
        trace_row("c", t0 + timedelta(seconds=40), "d", prompt="hello", user="u2"),
        trace_row("e", t0 + timedelta(seconds=400), "d", prompt="hello", user="u1"),
    ]

    class Row:
        def __init__(self, d):  # type: ignore[no-untyped-def]
            self.__dict__.update(d)

    found = count_regenerations([Row(r) for r in rows], t0, timedelta(seconds=120))
    assert found == {(t0, ("d", "d@v1", "v1")): 1}


@pytest.fixture
def seeded(store):  # type: ignore[no-untyped-def]
    rows = list(synthetic_traces(2000, START, NOW - START, seed=3, users=40))
    insert_traces(store, rows)
    insert_feedback(
        store,
        [{"id": f"fb{i:030d}", "trace_id": r["id"], "score": (i % 3) / 2, "at": r["at"] + timedelta(seconds=5)}
         for i, r in enumerate(rows[::7])],
    )  # fmt: skip
    RollupJob(store).run_once(NOW)
    return rows


def test_report_matches_a_group_by_over_raw_traces(store, seeded):
    got = {r["deployment"]: r for r in report(store, START, NOW)}
    with store.session() as session:
        raw = session.execute(
            select(TraceRow.deployment, func.count(), func.sum(TraceRow.prompt_tokens), func.sum(TraceRow.cost_usd))
            .group_by(TraceRow.deployment)
        ).all()  # fmt: skip
    assert set(got) == {d for d, *_ in raw}
    for deployment, count, prompt_tokens, cost in raw:
        assert got[deployment]["requests"] == count
        assert got[deployment]["prompt_tokens"] == prompt_tokens
        assert got[deployment]["cost_usd"] == pytest.approx(cost, abs=1e-6)  # reports round to 1e-6 USD
    by_dep: dict[str, list[dict]] = defaultdict(list)
    for r in seeded:
        by_dep[r["deployment"]].append(r)
    for deployment, rows in by_dep.items():
        assert got[deployment]["errors"] == sum(r["status"] >= 400 for r in rows)
        for q in (50, 95, 99):
            exact = nearest_rank([r["latency_ms"] for r in rows], q / 100)
            assert got[deployment]["latency_ms"][f"p{q}"] == pytest.approx(exact, rel=RELATIVE_ERROR)
        ttft = [r["ttft_ms"] for r in rows if r["ttft_ms"] is not None]
        assert got[deployment]["ttft_ms"]["p95"] == pytest.approx(
            nearest_rank(ttft, 0.95), rel=RELATIVE_ERROR
        )
        fb = [i for i, r in enumerate(seeded[::7]) if r["deployment"] == deployment]
        assert got[deployment]["feedback_count"] == len(fb)
        assert got[deployment]["feedback_mean"] == pytest.approx(sum((i % 3) / 2 for i in fb) / len(fb))


def test_a_day_of_one_deployment_counts_distinct_users_and_sessions_exactly(store, seeded):
    day = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        r for r in seeded
        if day <= r["at"] < day + timedelta(days=1) and r["deployment"] == "support" and r["model_version"] == "v2"
    ]  # fmt: skip
    by_version = report(store, day, day + timedelta(days=1), deployment="support", by=("model_version",))
    got = next(r for r in by_version if r["model_version"] == "v2")
    assert got["requests"] == len(rows)
    assert got["users"] == len({r["user"] for r in rows})
    assert got["sessions"] == len({r["session"] for r in rows})


def test_series_per_version_sums_to_the_total(store, seeded):
    points = series(store, "support", START, NOW, grain="h")
    assert {p["model_version"] for p in points} == {"v1", "v2"}
    assert sum(p["requests"] for p in points) == sum(r["deployment"] == "support" for r in seeded)


def test_the_deployment_pages_read_agrees_with_report_and_series(store, seeded):
    per_version, totals, arms = series_and_total(store, "support", START, NOW, grain="h")
    assert per_version == series(store, "support", START, NOW, grain="h", percentiles=False)
    start = START.replace(minute=0)  # the charted span starts at the first bucket's start
    by_version = report(store, start, NOW, deployment="support", by=("model_version",))
    want = {r["model_version"]: r for r in by_version}
    fields = ("requests", "errors", "statuses", "latency_ms", "ttft_ms", "prompt_tokens", "feedback_count")
    for arm in arms:  # (users and sessions differ: distinct per hour here, per day in the report's day rows)
        for field in fields:
            assert arm[field] == want[arm["model_version"]][field], field
        assert arm["cost_usd"] == pytest.approx(want[arm["model_version"]]["cost_usd"])
    for point in totals[1:-1]:  # whole hours: the report over that hour is the chart's point
        hour = datetime.fromisoformat(point["bucket"])
        want = report(store, hour, hour + timedelta(hours=1), deployment="support")[0]
        assert point["latency_ms"] == want["latency_ms"] and point["requests"] == want["requests"]
        assert point["ttft_ms"] == {"p50": None, "p95": None, "p99": None}  # the chart draws latency only
    volume = requests_per_bucket(store, START, NOW, grain="h")
    plain = series(store, None, START, NOW, grain="h", by=("deployment",), percentiles=False)
    assert volume == [{k: p[k] for k in ("bucket", "deployment", "requests")} for p in plain]


def test_late_traces_are_picked_up_and_a_rerun_changes_nothing(store, seeded):
    job = RollupJob(store)
    assert job.run_once(NOW + timedelta(minutes=1)) == 0
    late = trace_row(
        "late" + "0" * 28, NOW - timedelta(minutes=3), "support", prompt="late one", latency_ms=5000
    )
    insert_traces(store, [late])
    assert job.run_once(NOW + timedelta(minutes=2)) == 1
    total = report(store, START, NOW + timedelta(minutes=2), deployment="support")[0]
    assert total["requests"] == sum(r["deployment"] == "support" for r in seeded) + 1


def test_evaluation_traffic_and_shadow_copies_are_not_monitored(store):
    at = NOW - timedelta(minutes=10)
    live = trace_row("live" + "0" * 28, at, "support", prompt="where is my order", latency_ms=100)
    evals = [
        {
            **trace_row(f"eval{i:028d}", at, "support", prompt="graded", latency_ms=9000),
            "meta": {"source": "eval"},
        }
        for i in range(3)
    ]
    shadow = {**trace_row("shad" + "0" * 28, at, "support", prompt="copy"), "shadow_of": live["id"]}
    insert_traces(store, [live, *evals, shadow])
    insert_feedback(store, [{"id": "fb" + "0" * 30, "trace_id": evals[0]["id"], "score": 0.0, "at": at}])
    job = RollupJob(store)
    job.run_once(NOW)
    got = report(store, START, NOW, deployment="support")[0]
    assert got["requests"] == 1 and got["feedback_count"] == 0
    assert got["latency_ms"]["p99"] == pytest.approx(100, rel=RELATIVE_ERROR)
    assert job.run_once(NOW + timedelta(minutes=1)) == 0  # skipped traces are not missing minutes
    window = sample_window(store, "support", START, NOW)
    assert window["count"] == 1 and len(window["numeric"]["feedback_score"]) == 0


def test_the_rollup_process_writes_what_the_job_in_process_writes(store, db_url):  # type: ignore[no-untyped-def]
    """corral serve runs rounds in a child process (off the gateway's GIL); the rows are the same."""
    from corral.monitor.offload import RollupProcess
    from corral.store.models import RollupRow

    insert_traces(store, list(synthetic_traces(300, START, timedelta(hours=2), seed=5, users=10)))
    child = RollupProcess(db_url, lookback_s=900)
    try:
        assert child.run_once(START + timedelta(hours=2)) > 0
        assert child.run_once(START + timedelta(hours=2)) == 0  # the child kept its job: nothing new
    finally:
        child.close()

    def rows() -> list[tuple[Any, ...]]:
        with store.session() as session:
            found = session.execute(select(RollupRow.grain, RollupRow.bucket, RollupRow.requests)).all()
        return sorted(tuple(r) for r in found)

    by_child = rows()
    with store.engine.begin() as conn:
        conn.execute(RollupRow.__table__.delete())
    RollupJob(store, lookback_s=900).refresh(START, START + timedelta(hours=3))
    assert by_child and rows() == by_child
