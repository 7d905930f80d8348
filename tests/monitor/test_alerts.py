"""Alerts: a seeded latency spike fires, posts to a local webhook once while firing, then resolves."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from corral.config import AlertRuleSettings, MonitorSettings
from corral.monitor.alerts import OpenAlert, breaches, history, post_webhook, subscribe, transition
from corral.monitor.service import MonitorService
from corral.store.models import DeploymentRow
from corral.testing.traffic import insert_feedback, insert_traces, trace_row

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Hook:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fail_next = 0


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["content-length"]))
            if hook.fail_next:
                hook.fail_next -= 1
                self.send_response(503)
            else:
                hook.events.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", hook
    server.shutdown()


def test_transition_fires_once_resends_only_after_the_repeat_interval_and_resolves():
    open_ = OpenAlert(T0, T0)
    assert transition(True, None, T0, None) == "fire"
    assert transition(False, None, T0, None) is None
    assert transition(True, open_, T0 + timedelta(hours=5), None) is None
    assert transition(True, open_, T0 + timedelta(minutes=9), timedelta(minutes=10)) is None
    assert transition(True, open_, T0 + timedelta(minutes=10), timedelta(minutes=10)) == "resend"
    assert transition(False, open_, T0 + timedelta(minutes=1), None) == "resolve"
    assert breaches("drift_p_value", 0.001, 0.01) and not breaches("error_rate", 0.01, 0.05)
    assert not breaches("error_rate", None, 0.0)


def test_webhook_is_retried_after_a_server_error(webhook):
    url, hook = webhook
    hook.fail_next = 2
    assert post_webhook(url, {"x": 1}, retries=3, backoff_s=0.01)
    assert hook.events == [{"x": 1}]


def _minutes(start: datetime, minutes: int, latency_ms: float, prefix: str) -> list[dict[str, Any]]:
    return [
        trace_row(f"{prefix}{m:04d}{i:02d}".ljust(32, "0"), start + timedelta(minutes=m, seconds=i * 5), "chat",
                  prompt="hello", latency_ms=latency_ms)
        for m in range(minutes) for i in range(6)
    ]  # fmt: skip


def test_a_latency_spike_fires_posts_once_while_firing_and_resolves(store, webhook):
    url, hook = webhook
    with store.session() as session:
        session.add(DeploymentRow(name="chat", spec={"routes": []}, updated_by="test"))
    settings = MonitorSettings(
        alert_webhook=url,
        drift_reports=False,
        alerts=[AlertRuleSettings(name="slow", metric="p95_latency_ms", threshold=1000, for_minutes=3)],
    )
    seen: list[dict[str, Any]] = []
    unsubscribe = subscribe(seen.append)
    monitor, other_replica = (
        MonitorService(store, settings, holder="a"),
        MonitorService(store, settings, holder="b"),
    )
    try:
        insert_traces(store, _minutes(T0, 10, 120.0, "calm"))
        assert monitor.run_once(T0 + timedelta(minutes=10))["alerts"] == []  # type: ignore[index]
        insert_traces(store, _minutes(T0 + timedelta(minutes=10), 5, 2500.0, "spike"))
        round_ = monitor.run_once(T0 + timedelta(minutes=14, seconds=50))
        assert [e["action"] for e in round_["alerts"]] == ["fire"]  # type: ignore[index]
        assert other_replica.run_once(T0 + timedelta(minutes=14, seconds=55)) is None  # not the leader
        assert monitor.run_once(T0 + timedelta(minutes=14, seconds=58))["alerts"] == []  # type: ignore[index]
        assert [e["state"] for e in hook.events] == ["firing"]
        assert hook.events[0]["value"] == pytest.approx(2500, rel=0.01)
        insert_traces(store, _minutes(T0 + timedelta(minutes=15), 4, 100.0, "after"))
        round_ = monitor.run_once(T0 + timedelta(minutes=18, seconds=50))
        assert [e["action"] for e in round_["alerts"]] == ["resolve"]  # type: ignore[index]
    finally:
        unsubscribe()
    assert [e["state"] for e in hook.events] == ["firing", "resolved"]
    assert [e["state"] for e in seen] == ["firing", "resolved"]
    (event,) = history(store)
    assert event["state"] == "resolved" and event["sends"] == 1
    assert event["value"] == pytest.approx(2500, rel=0.01) and event["resolved_value"] == pytest.approx(
        100, rel=0.01
    )


def test_low_user_feedback_fires_a_feedback_mean_rule_and_judge_scores_do_not_count(store):
    with store.session() as session:
        session.add(DeploymentRow(name="chat", spec={"routes": []}, updated_by="test"))
    rule = AlertRuleSettings(name="bad-answers", metric="feedback_mean", threshold=0.6, for_minutes=10)
    monitor = MonitorService(store, MonitorSettings(drift_reports=False, alerts=[rule]), holder="a")
    traces = _minutes(T0, 5, 100.0, "rated")
    insert_traces(store, traces)
    judged = [{"id": f"j{i}", "trace_id": t["id"], "score": 0.0, "at": t["at"], "source": "judge:exact"}
              for i, t in enumerate(traces)]  # fmt: skip
    insert_feedback(store, judged)  # online evaluation's scores are not users' feedback
    assert monitor.run_once(T0 + timedelta(minutes=6))["alerts"] == []  # type: ignore[index]
    insert_feedback(store, [{"id": f"u{i}", "trace_id": t["id"], "score": 0.2 if i % 3 else 1.0, "at": t["at"]}
                            for i, t in enumerate(traces)])  # fmt: skip
    (event,) = monitor.run_once(T0 + timedelta(minutes=7))["alerts"]  # type: ignore[index]
    assert event["action"] == "fire" and event["value"] == pytest.approx((0.2 * 20 + 1.0 * 10) / 30)
    assert breaches("feedback_mean", 0.7, 0.6) is False and breaches("feedback_mean", None, 0.6) is False
