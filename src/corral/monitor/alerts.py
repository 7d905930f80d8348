"""Alert rules: measure each rule from the rollups, decide fire/resolve (pure), store events, notify sinks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from corral.config import AlertRuleSettings, MonitorSettings
from corral.config.sections import FALLING_METRICS
from corral.monitor.report import last, report, today
from corral.monitor.rollup import utc
from corral.monitor.sketch import LogHistogram
from corral.store import Store
from corral.store.models import AlertEventRow, DriftReportRow, RollupRow

log = logging.getLogger("corral.monitor.alerts")
Subscriber = Callable[[dict[str, Any]], None]
_subscribers: list[Subscriber] = []
_subscribers_lock = threading.Lock()


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Call `callback(event)` in this process on every fire and resolve; returns the unsubscribe function."""
    with _subscribers_lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _subscribers_lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


# -- the decision -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAlert:
    fired_at: datetime
    last_sent_at: datetime | None


def breaches(metric: str, value: float | None, threshold: float) -> bool:
    if value is None:
        return False
    return value < threshold if metric in FALLING_METRICS else value > threshold


def transition(
    breaching: bool, open_alert: OpenAlert | None, now: datetime, repeat: timedelta | None
) -> str | None:
    """fire, resend, resolve or None: a firing alert is not re-sent until it resolves or `repeat` passes."""
    if open_alert is None:
        return "fire" if breaching else None
    if not breaching:
        return "resolve"
    sent = open_alert.last_sent_at or open_alert.fired_at
    if repeat is not None and now - sent >= repeat:
        return "resend"
    return None


# -- measuring --------------------------------------------------------------------------------------------


def _minute_p95s(store: Store, deployment: str, since: datetime, until: datetime) -> list[float]:
    with store.reading() as session:
        rows = session.execute(
            select(RollupRow.bucket, RollupRow.latency_hist).where(
                RollupRow.grain == "m", RollupRow.deployment == deployment,
                RollupRow.bucket >= since, RollupRow.bucket < until,
            )
        ).all()  # fmt: skip
    per_minute: dict[datetime, LogHistogram] = {}
    for bucket, hist in rows:
        per_minute.setdefault(bucket, LogHistogram()).merge(hist)
    return [h.quantile(0.95) or 0.0 for h in per_minute.values() if h.total]


def _latest_drift(store: Store, deployment: str) -> dict[str, Any] | None:
    with store.reading() as session:
        row = session.scalars(
            select(DriftReportRow)
            .where(DriftReportRow.deployment == deployment)
            .order_by(desc(DriftReportRow.id))
        ).first()
        return row.report if row is not None else None


def measure(store: Store, rule: AlertRuleSettings, deployment: str, now: datetime) -> float | None:
    """The rule's metric for one deployment now; None when there is nothing to judge it on."""
    window = last(now, rule.for_minutes)
    if rule.metric == "p95_latency_ms":
        # "p95 over X for N minutes": the lowest per-minute p95 of the window, so every minute is over X.
        p95s = _minute_p95s(store, deployment, *window)
        return min(p95s) if p95s else None
    if rule.metric == "cost_per_day":
        rows = report(store, *today(now), deployment=deployment)
        return rows[0]["cost_usd"] if rows else 0.0
    if rule.metric in ("drift_p_value", "new_topic_share"):
        drift = _latest_drift(store, deployment)
        if drift is None:
            return None
        if rule.metric == "new_topic_share":
            return (drift.get("new_topics") or {}).get("share")
        return min((f["p_value"] for f in drift.get("features", [])), default=None)
    rows = report(store, *window, deployment=deployment)
    if not rows or not rows[0]["requests"]:
        return None
    if rule.metric == "error_rate":
        return float(rows[0]["error_rate"])
    if rule.metric == "feedback_mean":  # users' mean score over the window (None without feedback)
        mean = rows[0]["feedback_mean"]
        return None if mean is None else float(mean)
    # feedback_mean_drop: the week before the window against the window
    before = report(store, window[0] - timedelta(days=7), window[0], deployment=deployment)
    if rows[0]["feedback_mean"] is None or not before or before[0]["feedback_mean"] is None:
        return None
    return float(before[0]["feedback_mean"] - rows[0]["feedback_mean"])


# -- sinks ------------------------------------------------------------------------------------------------


def post_webhook(url: str, event: dict[str, Any], retries: int = 3, backoff_s: float = 0.5) -> bool:
    """POST the event as JSON; retry on connection errors and 5xx with exponential back-off."""
    for attempt in range(retries + 1):
        try:
            response = httpx.post(url, json=event, timeout=10)
            if response.status_code < 500:
                if response.status_code >= 400:
                    log.warning("alert webhook %s refused the event: HTTP %d", url, response.status_code)
                return response.status_code < 400
        except httpx.HTTPError as exc:
            log.warning("alert webhook %s failed (attempt %d): %s", url, attempt + 1, exc)
        if attempt < retries:
            time.sleep(backoff_s * 2**attempt)
    return False


def notify(rule: AlertRuleSettings, event: dict[str, Any], settings: MonitorSettings) -> None:
    if "log" in rule.sinks:
        log.warning(
            "alert %s %s on %s: %s = %s (threshold %s)", rule.name, event["state"], event["deployment"] or "all",
            rule.metric, event["value"], rule.threshold,
        )  # fmt: skip
    url = rule.webhook or settings.alert_webhook
    if "webhook" in rule.sinks and url:
        post_webhook(url, event, settings.webhook_retries)
    if "subscribers" in rule.sinks:
        with _subscribers_lock:
            callbacks = list(_subscribers)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:  # noqa: BLE001 - one bad subscriber must not stop the others
                log.exception("alert subscriber %r failed", callback)


# -- the engine -------------------------------------------------------------------------------------------


def _event(row: AlertEventRow, rule: AlertRuleSettings, action: str, value: float | None) -> dict[str, Any]:
    return {
        "rule": rule.name, "metric": rule.metric, "state": "resolved" if action == "resolve" else "firing",
        "action": action, "deployment": row.subject, "value": value, "threshold": rule.threshold,
        "fired_at": utc(row.fired_at).isoformat(),
        "resolved_at": utc(row.resolved_at).isoformat() if row.resolved_at else None, "id": row.id,
    }  # fmt: skip


class AlertEngine:
    """Evaluates every rule once per `check()`; what it fires and resolves is stored in alert_events."""

    def __init__(self, store: Store, settings: MonitorSettings, deployments: Callable[[], list[str]]) -> None:
        self.store = store
        self.settings = settings
        self.deployments = deployments

    def check(self, now: datetime | None = None) -> list[dict[str, Any]]:
        now = utc(now or datetime.now(UTC))
        events = []
        for rule in self.settings.alerts:
            for deployment in [rule.deployment] if rule.deployment else self.deployments():
                event = self._check_one(rule, deployment, now)
                if event is not None:
                    notify(rule, event, self.settings)
                    events.append(event)
        return events

    def _check_one(self, rule: AlertRuleSettings, deployment: str, now: datetime) -> dict[str, Any] | None:
        value = measure(self.store, rule, deployment, now)
        repeat = timedelta(minutes=rule.repeat_minutes) if rule.repeat_minutes else None
        with self.store.session() as session:
            row = session.scalars(
                select(AlertEventRow).where(
                    AlertEventRow.rule == rule.name, AlertEventRow.subject == deployment,
                    AlertEventRow.state == "firing",
                )
            ).first()  # fmt: skip
            current = (
                OpenAlert(utc(row.fired_at), row.last_sent_at and utc(row.last_sent_at)) if row else None
            )
            action = transition(breaches(rule.metric, value, rule.threshold), current, now, repeat)
            if action is None:
                return None
            if action == "fire":
                row = AlertEventRow(
                    rule=rule.name, subject=deployment, state="firing", value=value, threshold=rule.threshold,
                    fired_at=now, detail={"metric": rule.metric, "for_minutes": rule.for_minutes},
                )  # fmt: skip
                session.add(row)
            assert row is not None
            if action == "resolve":
                row.state, row.resolved_at, row.resolved_value = "resolved", now, value
            else:
                row.last_sent_at, row.sends = now, (row.sends or 0) + 1
            session.flush()
            return _event(row, rule, action, value)


def history(
    store: Store, *, firing_only: bool = False, limit: int = 100, session: Session | None = None
) -> list[dict[str, Any]]:
    """Alert events, newest first."""
    events = AlertEventRow.__table__.c  # Core columns: plain rows, no ORM objects to build
    query = select(*events).order_by(desc(events.id)).limit(limit)
    if firing_only:
        query = query.where(events.state == "firing")
    with store.reading(session) as session:
        return [
            {
                "id": r.id, "rule": r.rule, "deployment": r.subject, "state": r.state, "value": r.value,
                "threshold": r.threshold, "resolved_value": r.resolved_value, "sends": r.sends,
                "fired_at": utc(r.fired_at).isoformat(),
                "resolved_at": utc(r.resolved_at).isoformat() if r.resolved_at else None,
                "metric": (r.detail or {}).get("metric"),
            }
            for r in session.connection().execute(query).all()
        ]  # fmt: skip
