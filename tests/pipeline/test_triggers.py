"""Triggers: a cron schedule and the alerts a pipeline names start runs, on one replica only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from corral.config import AlertRuleSettings, MonitorSettings, PipelineSettings
from corral.errors import ConfigError
from corral.monitor.alerts import notify
from corral.pipeline.triggers import PipelineScheduler, alert_starts
from corral.store.models import LeaseRow

T0 = datetime(2026, 12, 7, 2, 58, tzinfo=UTC)  # a Monday, two minutes before the schedule
SPEC = {
    "name": "refresh",
    "model": "starter",
    "deployment": "support",
    "schedule": "0 3 * * 1",
    "triggers": {"alerts": ["feedback-drop"]},
    "dataset": {"name": "support-refresh"},
    "evaluate": {"gates": ["gate.yaml"]},
}


@pytest.fixture
def files(tmp_path: Path) -> PipelineSettings:
    (tmp_path / "refresh.yaml").write_text(yaml.safe_dump(SPEC))
    return PipelineSettings(files=["refresh.yaml"], lease_s=60.0)


def _scheduler(store, files, tmp_path, holder):  # type: ignore[no-untyped-def]
    started: list[tuple[str, str]] = []
    scheduler = PipelineScheduler(
        store, files, base_dir=tmp_path, spawn=lambda f, t: started.append((f.name, t)), holder=holder, now=T0
    )
    return scheduler, started


def test_a_schedule_starts_one_run_when_due_on_the_replica_holding_the_runner_lease(store, files, tmp_path):
    first, started_first = _scheduler(store, files, tmp_path, "replica-a")
    second, started_second = _scheduler(store, files, tmp_path, "replica-b")
    for minutes in range(0, 8):
        now = T0 + timedelta(minutes=minutes)
        first.tick(now)
        second.tick(now)
    assert started_first == [("refresh.yaml", "schedule")] and started_second == []
    with store.session() as session:
        assert session.get(LeaseRow, "pipeline-runner").holder == "replica-a"
    first.stop()  # gives the lease up: the other replica takes over the schedule
    second.tick(T0 + timedelta(days=7, minutes=3))
    assert started_second == [("refresh.yaml", "schedule")]


def test_an_alert_the_pipeline_names_starts_a_run_recording_the_alert(store, files, tmp_path):
    scheduler, started = _scheduler(store, files, tmp_path, "replica-a")
    scheduler.start()
    try:
        rule = AlertRuleSettings(
            name="feedback-drop", metric="feedback_mean_drop", threshold=0.2, sinks=["subscribers"]
        )
        event = {
            "rule": "feedback-drop",
            "action": "fire",
            "deployment": "support",
            "id": 42,
            "state": "firing",
        }
        notify(rule, event, MonitorSettings())  # what the monitor loop does when the rule fires
        notify(rule, {**event, "action": "resolve", "state": "resolved"}, MonitorSettings())
        notify(rule, {**event, "rule": "p95-high", "id": 43}, MonitorSettings())
        assert started == [("refresh.yaml", "alert:42")]
    finally:
        scheduler.stop()
    notify(rule, {**event, "id": 44}, MonitorSettings())  # unsubscribed
    assert started == [("refresh.yaml", "alert:42")]


def test_which_alerts_start_a_pipeline():
    from corral.pipeline import parse_pipeline

    spec = parse_pipeline(SPEC, check_train=False)
    fire = {"rule": "feedback-drop", "action": "fire", "deployment": "support"}
    assert alert_starts(spec, fire)
    assert not alert_starts(spec, {**fire, "deployment": "other"})
    assert not alert_starts(spec, {**fire, "action": "resend"})
    assert not alert_starts(spec, {**fire, "rule": "drift"})


def test_a_bad_pipeline_file_stops_serve_at_start_up(store, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**SPEC, "schedule": "at noon"}))
    with pytest.raises(ConfigError, match="bad.yaml: 'schedule'"):
        PipelineScheduler(store, PipelineSettings(files=["bad.yaml"]), base_dir=tmp_path, spawn=print)


def test_spawned_runs_are_separate_corral_processes(tmp_path, monkeypatch):
    import subprocess

    from corral.pipeline import triggers

    seen = {}

    class FakePopen:
        def __init__(self, command, **kwargs):  # type: ignore[no-untyped-def]
            seen["command"], seen["kwargs"] = command, kwargs

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    triggers.spawn_run(tmp_path / "refresh.yaml", "alert:7", "corral.yaml")
    command = seen["command"]
    assert command[1:] == [
        "-m", "corral.cli.main", "pipeline", "run", str(tmp_path / "refresh.yaml"), "--trigger", "alert:7",
        "--config", "corral.yaml",
    ]  # fmt: skip
    assert seen["kwargs"]["start_new_session"] is True


def test_serve_watches_the_pipeline_files_of_corral_yaml_while_it_runs(tmp_path, sqlite_url, monkeypatch):
    from corral.cli import serve
    from corral.config import load_settings
    from corral.monitor import alerts

    (tmp_path / "refresh.yaml").write_text(yaml.safe_dump(SPEC))
    config = tmp_path / "corral.yaml"
    config.write_text(
        yaml.safe_dump({"store": {"database_url": sqlite_url}, "pipeline": {"files": ["refresh.yaml"]}})
    )
    started: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "corral.pipeline.triggers.spawn_run", lambda f, t, c=None: started.append((f.name, t))
    )
    before = len(alerts._subscribers)
    with serve._pipeline_triggers(load_settings(str(config), environ={})):
        assert len(alerts._subscribers) == before + 1
        rule = AlertRuleSettings(
            name="feedback-drop", metric="feedback_mean_drop", threshold=0.2, sinks=["subscribers"]
        )
        notify(
            rule,
            {"rule": "feedback-drop", "action": "fire", "deployment": "support", "id": 5},
            MonitorSettings(),
        )
    assert started == [("refresh.yaml", "alert:5")] and len(alerts._subscribers) == before
