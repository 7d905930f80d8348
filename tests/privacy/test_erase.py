"""Forgetting a user: nothing of theirs stays in any table, artifact or spool file (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from corral.data.traces import TraceQuery, dataset_from_traces
from corral.errors import InvalidInputError
from corral.privacy import EXEMPT_TABLES, erase_user, purge_rule
from corral.store.models import Base, DriftReportRow, EvalItemRow, EvalRunRow, FeedbackRow, TraceRow

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
MARK = "zebra-7731"  # a word only alice's requests contain


def add_trace(registry: Any, n: int, user: str, question: str, *, shadow_of: str | None = None) -> str:
    """One stored exchange of `user` (and a thumbs-up on it)."""
    trace_id, at = f"{n:032x}", T0 + timedelta(minutes=n)
    exchange = {
        "request": {"messages": [{"role": "user", "content": question}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": f"re: {question}"}}]},
    }
    row = TraceRow(id=trace_id, at=at, day=at.strftime("%Y-%m-%d"), deployment="support", endpoint="chat")
    row.model_version, row.status, row.user, row.shadow_of = "support@1", 200, user, shadow_of
    row.request, row.response = exchange["request"], exchange["response"]
    with registry.store.session() as s:
        s.add(row)
        s.add(FeedbackRow(id=f"f{n:031x}", trace_id=trace_id, score=1.0))
    return trace_id


def add_eval_run(registry: Any, run_id: str, dataset: str, split: str) -> None:
    """A stored evaluation of `dataset`'s split: one item per row, asking (and answering) its text."""
    rows = registry.datasets.rows(dataset, None if split == "all" else split)
    with registry.store.session() as s:
        s.add(
            EvalRunRow(
                id=run_id, target="support@1", target_kind="model", dataset=dataset, split=split,
                config_key="k" * 64, status="complete", item_count=len(rows), created_by="test",
            )
        )  # fmt: skip
        s.flush()  # the run first: its items point at it
        for position, row in enumerate(rows):
            question = row["messages"][0]["content"]
            s.add(
                EvalItemRow(
                    run_id=run_id, position=position, request={"messages": row["messages"][:1]},
                    prediction=f"answer to {question}", reference=row["messages"][-1]["content"],
                )
            )  # fmt: skip


def add_drift_reports(registry: Any, examples: dict[str, str]) -> None:
    """A drift report whose new-topic examples name their traces, and an older one that does not."""
    topics = {"share": 0.5, "examples": list(examples.values()), "example_traces": list(examples)}
    legacy = {"share": 0.5, "examples": list(examples.values())}
    with registry.store.session() as s:
        s.add(DriftReportRow(deployment="support", report={"new_topics": topics}))
        s.add(DriftReportRow(deployment="support", report={"new_topics": legacy}))


@pytest.fixture
def world(registry, tmp_path, model_dir) -> dict[str, Any]:
    """Alice and bob have traces (alice's with a shadow copy), feedback, a dataset, a model, spool lines."""
    a1 = add_trace(registry, 1, "alice", f"my order {MARK} is late")
    a2 = add_trace(registry, 2, "alice", f"second question {MARK}")
    shadow = add_trace(registry, 3, "shadow-user", f"copy of {MARK}", shadow_of=a1)
    b1 = add_trace(registry, 4, "bob", "where is my parcel")
    version, _ = dataset_from_traces(registry, "support-data", TraceQuery())
    add_eval_run(registry, "a" * 32, version.ref, "all")
    for split in sorted({r["split"] for r in registry.datasets.rows(version.ref) if r.get("split")}):
        add_eval_run(registry, split.ljust(32, "0")[:32], version.ref, split)
    registry.models.register("support", model_dir("1"), lineage={"dataset": version.ref})
    registry.models.register("unrelated", model_dir("2"), lineage={"dataset": "other@1"})
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        {"kind": "trace", "row": {"id": "9" * 32, "user": "alice", "request": {"q": MARK}}},
        {"kind": "feedback", "row": {"id": "f9", "trace_id": a2, "score": 0}},
        {"kind": "trace", "row": {"id": "8" * 32, "user": "bob", "request": {"q": "hello"}}},
    ]
    (spool / "spool-0001.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    add_drift_reports(registry, {a1: f"my order {MARK} is late", b1: "where is my parcel"})
    return {"alice": [a1, a2, shadow], "bob": b1, "dataset": version.ref, "spool": spool}


def test_every_table_is_purged_by_a_rule_or_declared_exempt():
    for table in Base.metadata.sorted_tables:
        rule = purge_rule(table)
        assert rule is not None or table.name in EXEMPT_TABLES, (
            f"table {table.name} holds rows no user deletion removes: give it a `user` or `trace_id` "
            "column, or declare it in corral.privacy.erase.EXEMPT_TABLES with the reason"
        )
        assert not (rule and table.name in EXEMPT_TABLES), f"{table.name} is both purged and exempt"


def test_dry_run_counts_and_changes_nothing(registry, world):
    report = erase_user(registry, "alice", dry_run=True, spool_dir=world["spool"])
    assert report.tables["traces"] == 3 and report.tables["feedback"] == 3
    assert report.tables["eval_items"] == 4  # alice's 2 rows, in the `all` run and in their split's run
    assert report.datasets == [{"version": world["dataset"], "rows_removed": 2, "artifact_deleted": True}]
    assert report.models_flagged == ["support@1"] and report.spool_lines == 2
    with registry.store.session() as s:
        assert len(s.scalars(select(TraceRow)).all()) == 4
    assert registry.datasets.get(world["dataset"]).tags == {}
    assert MARK in (world["spool"] / "spool-0001.jsonl").read_text()


def _everything(registry) -> str:
    """Every value of every row of every table, and every artifact file, as one text."""
    parts = []
    with registry.store.session() as s:
        for table in Base.metadata.sorted_tables:
            if table.name == "audit_log":
                continue  # exempt: it records the deletion (subject user:alice), checked below
            for row in s.execute(select(table)).all():
                parts.append(json.dumps([str(v) for v in row]))
    root = Path(registry.artifacts.url) if "://" not in registry.artifacts.url else None
    if root is not None:
        for path in root.rglob("*"):
            if path.is_file():
                parts.append(path.read_bytes().decode(errors="replace"))
    return "\n".join(parts)


def test_nothing_of_the_user_remains_in_any_table_artifact_or_spool(registry, world):
    before = _everything(registry)
    assert MARK in before and "alice" in before
    report = erase_user(registry, "alice", spool_dir=world["spool"])
    after = _everything(registry)
    assert MARK not in after
    assert "alice" not in after
    for trace_id in world["alice"]:
        _gone(registry, trace_id)
    assert world["bob"] in after and "where is my parcel" in after
    with registry.store.session() as s:  # bob's row stays asked, in both runs that had it
        asked = [i.request["messages"][0]["content"] for i in s.scalars(select(EvalItemRow))]
    assert asked == ["where is my parcel"] * 2
    with registry.store.session() as s:
        reports = [
            r.report["new_topics"] for r in s.scalars(select(DriftReportRow).order_by(DriftReportRow.id))
        ]
    assert reports[0]["examples"] == ["where is my parcel"] and reports[0]["example_traces"] == [world["bob"]]
    assert reports[1]["examples"] == []  # without trace ids nobody can tell whose they were
    assert report.tables["drift_reports"] == 3
    spool = (world["spool"] / "spool-0001.jsonl").read_text()
    assert MARK not in spool and "alice" not in spool and "bob" in spool
    # the dataset: a new version without alice's rows; the old version's artifact is gone
    assert report.datasets[0]["new_version"] == "support-data@2"
    rows = registry.datasets.rows("support-data@2")
    assert [r["messages"][0]["content"] for r in rows] == ["where is my parcel"]
    assert registry.datasets.get("support-data@2").lineage["source"] == "erasure"
    assert not registry.artifacts.exists(registry.datasets.get(world["dataset"]).digest)
    # the model trained on it is flagged; the other is not
    assert registry.models.resolve("support@1").tags.get("trained_on_deleted_data") is True
    assert "trained_on_deleted_data" not in registry.models.resolve("unrelated@1").tags
    entry = registry.audit.list(subject="user:alice")[0]
    assert entry.action == "privacy.delete" and entry.after["tables"]["traces"] == 3
    assert MARK not in json.dumps(entry.after)


def _gone(registry, trace_id: str) -> None:
    """The trace and its feedback are gone (its id may stay in a dataset's lineage: an id, not content)."""
    with registry.store.session() as s:
        assert s.get(TraceRow, trace_id) is None
        assert not s.scalars(select(FeedbackRow).where(FeedbackRow.trace_id == trace_id)).all()


def test_a_second_deletion_finds_nothing(registry, world):
    erase_user(registry, "alice", spool_dir=world["spool"])
    again = erase_user(registry, "alice", spool_dir=world["spool"])
    assert not any(again.tables.values()) and again.datasets == [] and again.spool_lines == 0


def test_an_empty_user_is_refused(registry):
    with pytest.raises(InvalidInputError):
        erase_user(registry, "  ")
