"""Datasets from traces: selection by deployment, version, time and feedback; redaction; lineage; CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from corral.cli.main import main
from corral.data.traces import TraceQuery, dataset_from_traces, select_trace_rows, trace_to_row
from corral.errors import InvalidInputError
from corral.store.models import FeedbackRow, TraceRow

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def add_trace(
    registry: Any,
    n: int,
    question: str,
    answer: str = "fine",
    *,
    deployment: str = "support",
    version: str = "support@1",
    scores: tuple[float, ...] = (),
    **extra: Any,
) -> str:
    trace_id = f"{n:032x}"
    at = T0 + timedelta(minutes=n)
    with registry.store.session() as s:
        s.add(
            TraceRow(
                id=trace_id,
                at=at,
                day=at.strftime("%Y-%m-%d"),
                deployment=deployment,
                endpoint=extra.pop("endpoint", "chat"),
                model_version=version,
                request=extra.pop("request", {"messages": [{"role": "user", "content": question}]}),
                response=extra.pop(
                    "response", {"choices": [{"message": {"role": "assistant", "content": answer}}]}
                ),
                status=extra.pop("status", 200),
                **extra,
            )
        )
        for i, score in enumerate(scores):
            s.add(FeedbackRow(id=f"{n:030x}{i:02x}", trace_id=trace_id, score=score))
    return trace_id


def questions(registry: Any, query: TraceQuery) -> list[str]:
    return [r["messages"][0]["content"] for r in select_trace_rows(registry, query).rows]


def test_traces_are_selected_by_deployment_version_window_and_feedback(registry):
    add_trace(registry, 1, "q1", scores=(1.0,))
    add_trace(registry, 2, "q2", scores=(0.0, 1.0))  # mean 0.5
    add_trace(registry, 3, "q3", scores=(0.0,))
    add_trace(registry, 4, "q4", version="support@2")
    add_trace(registry, 5, "q5", deployment="other")
    add_trace(registry, 6, "failed", status=502)
    add_trace(registry, 7, "shadow copy", shadow_of="0" * 32)
    add_trace(registry, 8, "vectors", endpoint="embeddings")
    assert questions(registry, TraceQuery(deployment="support")) == ["q4", "q3", "q2", "q1"]
    assert questions(registry, TraceQuery(model="support@1")) == ["q5", "q3", "q2", "q1"]
    assert questions(registry, TraceQuery(min_score=0.5)) == ["q2", "q1"]
    assert questions(registry, TraceQuery(max_score=0.4)) == ["q3"]
    window = TraceQuery(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert questions(registry, window) == ["q3", "q2"]
    assert questions(registry, TraceQuery(limit=2)) == ["q5", "q4"]


def test_judge_scores_and_evaluation_traffic_are_not_production_feedback(registry):
    add_trace(registry, 1, "q1", scores=(0.0,))
    add_trace(registry, 2, "q2")
    add_trace(registry, 3, "from an evaluation", meta={"source": "eval"})
    with registry.store.session() as s:  # a judge rated q1 high and q2 low: not what users said
        s.add(FeedbackRow(id="j1".ljust(32, "0"), trace_id=f"{1:032x}", score=1.0, source="judge:helpful"))
        s.add(FeedbackRow(id="j2".ljust(32, "0"), trace_id=f"{2:032x}", score=0.0, source="judge:helpful"))
    assert questions(registry, TraceQuery(min_score=0.5)) == []
    assert questions(registry, TraceQuery(max_score=0.5)) == ["q1"]
    selected = select_trace_rows(registry, TraceQuery())
    assert [r["messages"][0]["content"] for r in selected.rows] == ["q2", "q1"]
    assert selected.skipped["evaluation traffic"] == 1


def test_an_alias_in_the_query_means_the_version_it_points_at(registry, model_dir):
    registry.models.register("support", model_dir("1"))
    registry.models.register("support", model_dir("2"))
    registry.models.set_alias("support", "production", 1)
    add_trace(registry, 1, "old", version="support@1")
    add_trace(registry, 2, "new", version="support@2")
    assert questions(registry, TraceQuery(model="support@production")) == ["old"]
    assert questions(registry, TraceQuery(model="support@2")) == ["new"]


def test_a_bare_model_name_selects_traces_of_every_version_of_it(registry, model_dir):
    registry.models.register("starter", model_dir("1"))
    registry.models.register("starter", model_dir("2"))  # the latest: no traffic on it yet
    registry.models.register("starter_x", model_dir("3"))
    add_trace(registry, 1, "served by the first", version="starter@1")
    add_trace(registry, 2, "a look-alike name", version="starter_x@1")
    assert questions(registry, TraceQuery(model="starter")) == ["served by the first"]


def test_an_unknown_model_or_version_is_not_found_rather_than_no_match(registry, model_dir):
    from corral.errors import NotFoundError

    registry.models.register("support", model_dir("1"))
    add_trace(registry, 1, "q")
    with pytest.raises(NotFoundError, match="model 'nope' does not exist"):
        select_trace_rows(registry, TraceQuery(model="nope@1"))
    with pytest.raises(NotFoundError, match="model 'nope' does not exist"):
        select_trace_rows(registry, TraceQuery(model="nope"))
    with pytest.raises(NotFoundError, match=r"has no version 7 \(latest is 1\)"):
        select_trace_rows(registry, TraceQuery(model="support@7"))


def test_since_and_until_take_dates_spans_and_words_and_say_what_they_take():
    from corral.cli.data_cmd import parse_when

    now = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
    assert parse_when("yesterday", "--since", now) == datetime(2026, 12, 2, tzinfo=UTC)
    assert parse_when("today", "--since", now) == datetime(2026, 12, 3, tzinfo=UTC)
    assert parse_when("24h", "--since", now) == now - timedelta(hours=24)
    assert parse_when("7d", "--since", now) == now - timedelta(days=7)
    assert parse_when("2026-11-01T12:00", "--since", now) == T0
    assert parse_when("2026-11-01T12:00+01:00", "--since", now) == T0 - timedelta(hours=1)
    with pytest.raises(InvalidInputError, match="--until 'soon' is not a time") as info:
        parse_when("soon", "--until", now)
    assert "24h" in str(info.value)


def test_rows_are_redacted_split_and_registered_with_the_query_in_their_lineage(registry):
    for n in range(12):
        add_trace(
            registry, n, f"order {n} for ann{n}@example.com", f"sent to ann{n}@example.com", scores=(1.0,)
        )
    add_trace(registry, 20, "unrated")
    version, report = dataset_from_traces(
        registry, "from-traffic", TraceQuery(deployment="support", min_score=1)
    )
    rows = registry.datasets.rows(version.ref)
    assert version.row_count == 12 and report["traces"] == 12 and report["redacted"]
    assert all("@example.com" not in json.dumps(r) for r in rows)
    assert {r["split"] for r in rows} <= {"train", "validation", "test"}
    assert version.lineage["source"] == "traces"
    assert version.lineage["query"]["deployment"] == "support" and version.lineage["query"]["min_score"] == 1
    again, _ = dataset_from_traces(registry, "from-traffic", TraceQuery(deployment="support", min_score=1))
    assert again.version == version.version and not again.created


def test_exchanges_that_cannot_be_rows_are_counted_not_hidden(registry):
    assert trace_to_row("chat", None, None) == "bodies not stored"
    assert trace_to_row("chat", {"messages": []}, {"choices": []}) == "no answer text"
    completion = trace_to_row("completions", {"prompt": "2+2="}, {"choices": [{"text": "4"}]})
    assert completion == {
        "messages": [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]
    }
    add_trace(registry, 1, "x", request=None, response=None)
    with pytest.raises(
        InvalidInputError, match="no trace matches the query deployment=support.*bodies not stored"
    ):
        dataset_from_traces(registry, "d", TraceQuery(deployment="support"))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (TraceQuery(min_score=2), "min_score 2 must be in"),
        (TraceQuery(min_score=0.9, max_score=0.1), "is above max_score"),
        (TraceQuery(since=T0, until=T0), "is not before"),
        (TraceQuery(limit=0), "limit must be at least 1"),
    ],
)
def test_bad_queries_are_clear_errors(registry, query, message):
    with pytest.raises(InvalidInputError, match=message):
        select_trace_rows(registry, query)


def test_cli_from_traces(capsys, sqlite_url, monkeypatch):
    monkeypatch.setenv("CORRAL_DATABASE_URL", sqlite_url)
    from corral.registry import open_registry

    registry = open_registry()
    for n in range(5):
        add_trace(registry, n, f"question {n}", scores=(1.0,))

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    code, out, err = run(
        "datasets", "from-traces", "traffic", "--deployment", "support", "--min-score", "0.5", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["row_count"] == 5
    code, out, err = run("datasets", "from-traces", "traffic", "--deployment", "nope")
    assert (
        code != 0
        and "no trace matches the query deployment=nope" in out + err
        and "Traceback" not in out + err
    )
    code, out, err = run("datasets", "from-traces", "traffic", "--since", "yesterday", "--deployment", "nope")
    assert code != 0 and "no trace matches" in err and "Input should be" not in err
    code, out, err = run("datasets", "from-traces", "traffic", "--since", "someday")
    assert code == 2 and "--since 'someday' is not a time" in err and "Input should be" not in err
    code, out, err = run("datasets", "from-traces", "traffic", "--model", "nope@1")
    assert code == 3 and "model 'nope' does not exist" in err


def test_a_tool_call_conversation_becomes_a_row_with_its_calls_results_and_tools():
    from corral.data import BuildOptions, build_rows

    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"order": 42}'}}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    request = {
        "tools": tools,
        "messages": [
            {"role": "user", "content": "where is order 42?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "in Berlin"},
        ],
    }
    answer = {"choices": [{"message": {"role": "assistant", "content": "It is in Berlin."}}]}
    row = trace_to_row("chat", request, answer)
    assert row == {
        "tools": tools,
        "messages": [
            {"role": "user", "content": "where is order 42?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "in Berlin", "tool_call_id": "c1"},
            {"role": "assistant", "content": "It is in Berlin."},
        ],
    }
    # an answer that is only a tool call is a row too, and cleaning does not drop it as empty
    only_call = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    row = trace_to_row("chat", {"messages": request["messages"][:1]}, only_call)
    assert isinstance(row, dict) and row["messages"][-1]["tool_calls"] == [call]
    built = build_rows([row], BuildOptions(redact=True), "chat")
    assert built.rows[0]["messages"][-1]["tool_calls"][0]["function"]["name"] == "lookup"


def _correct(registry: Any, trace_id: str, text: str, *, source: str = "user", n: int = 0) -> None:
    with registry.store.session() as s:
        s.add(
            FeedbackRow(
                id=f"c{n:031x}", trace_id=trace_id, score=0.0, source=source, correction=text,
                at=T0 + timedelta(hours=1, minutes=n),
            )
        )  # fmt: skip


def test_corrections_become_targets_and_low_rated_traces_without_one_are_skipped(registry):
    wrong = add_trace(registry, 1, "where are my points?", "I do not know", scores=(0.0,))
    add_trace(registry, 2, "how do I pay?", "who knows", scores=(0.0,))  # low-rated, no correction
    add_trace(registry, 3, "hello", "Hello! How can I help?", scores=(1.0,))
    add_trace(registry, 4, "unrated", "an answer")
    _correct(registry, wrong, "See Account > Rewards.", n=1)
    _correct(registry, wrong, "a judge's opinion", source="judge:helpful", n=2)  # not a user's
    plain = select_trace_rows(registry, TraceQuery())
    assert [r["messages"][-1]["content"] for r in plain.rows][-1] == "I do not know"
    chosen = select_trace_rows(registry, TraceQuery(use_corrections=True))
    answers = {r["messages"][0]["content"]: r["messages"][-1]["content"] for r in chosen.rows}
    assert answers == {
        "where are my points?": "See Account > Rewards.",
        "hello": "Hello! How can I help?",
        "unrated": "an answer",
    }
    assert chosen.corrected == 1 and chosen.skipped["low-rated without a correction"] == 1
    version, report = dataset_from_traces(registry, "fixed", TraceQuery(use_corrections=True))
    assert report["corrected"] == 1 and version.lineage["query"]["use_corrections"] is True


def test_cli_from_traces_use_corrections(capsys, sqlite_url, monkeypatch):
    monkeypatch.setenv("CORRAL_DATABASE_URL", sqlite_url)
    from corral.registry import open_registry

    registry = open_registry()
    _correct(registry, add_trace(registry, 1, "q", "bad", scores=(0.0,)), "good")
    add_trace(registry, 2, "q2", "bad too", scores=(0.0,))
    with pytest.raises(SystemExit) as info:
        main(["datasets", "from-traces", "fixed", "--use-corrections", "--json"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert json.loads(out)["row_count"] == 1
    [row] = registry.datasets.rows("fixed@1")
    assert row["messages"][-1]["content"] == "good"
