"""Retention purges old traces and feedback in batches; the audit log exports as JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from corral.cli.main import main
from corral.privacy import export_audit, purge_expired
from corral.store.models import FeedbackRow, TraceRow

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _trace(n: int, at: datetime) -> TraceRow:
    return TraceRow(
        id=f"{n:032x}", at=at, day=at.strftime("%Y-%m-%d"), deployment="d", endpoint="chat", status=200
    )


def test_retention_purges_old_traces_and_feedback_in_batches(store):
    with store.session() as s:
        for n in range(7):
            s.add(_trace(n, NOW - timedelta(days=40 + n)))
            s.add(FeedbackRow(id=f"f{n}", trace_id=f"{n:032x}", score=1.0, at=NOW - timedelta(days=40)))
        s.add(_trace(100, NOW - timedelta(days=1)))
        s.add(FeedbackRow(id="recent", trace_id=f"{100:032x}", score=0.0, at=NOW - timedelta(days=1)))
        s.add(FeedbackRow(id="orphan-old", trace_id="spooled", score=0.0, at=NOW - timedelta(days=90)))
    counts = purge_expired(store, 30, batch=3, now=NOW)
    assert counts == {"traces": 7, "feedback": 8}
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(TraceRow)) == 1
        assert [f.id for f in s.scalars(select(FeedbackRow))] == ["recent"]


def test_audit_export_writes_jsonl_and_csv_since_a_day(registry, tmp_path, model_dir):
    registry.models.register("a", model_dir("1"))
    registry.models.register("b", model_dir("2"))
    out = tmp_path / "audit.jsonl"
    expected = [(e.id, e.action, e.subject) for e in reversed(registry.audit.list(limit=1000))]
    assert len(expected) >= 2
    assert export_audit(registry.store, out) == len(expected)
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["id"], e["action"], e["subject"]) for e in entries] == expected
    assert export_audit(registry.store, out, since=datetime.now(UTC) + timedelta(days=1)) == 0
    path = tmp_path / "audit.csv"
    export_audit(registry.store, path, fmt="csv")
    rows = list(csv.DictReader(path.open()))
    assert [(int(r["id"]), r["action"], r["subject"]) for r in rows] == expected


def _run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_cli_audit_still_lists_and_now_exports(capsys, tmp_path):
    path = tmp_path / "log.csv"
    code, out, err = _run(capsys, "audit")
    assert code == 0, err
    code, out, err = _run(capsys, "audit", "--export", str(path), "--format", "csv", "--since", "2020-01-01")
    assert code == 0, err
    assert "audit entries" in out and path.read_text().startswith("id,at,actor")
    code, _, err = _run(capsys, "audit", "--export", str(path), "--since", "yesterday")
    assert code == 2 and "YYYY-MM-DD" in err and "Traceback" not in err
    code, _, err = _run(capsys, "audit", "--export", str(path), "--format", "xml")
    assert code == 2 and "jsonl or csv" in err


def test_cli_privacy_delete_dry_run_then_real(capsys):
    from corral.registry import open_registry

    registry = open_registry()
    with registry.store.session() as s:
        row = _trace(1, NOW)
        row.user = "carol"
        s.add(row)
    code, out, err = _run(capsys, "privacy", "delete", "--user", "carol", "--dry-run")
    assert code == 0, err
    assert "would remove" in out and "traces" in out
    code, out, err = _run(capsys, "privacy", "delete", "--user", "carol", "--json")
    assert code == 0, err
    assert json.loads(out)["tables"]["traces"] == 1
    assert registry.audit.list(subject="user:carol")[0].action == "privacy.delete"
