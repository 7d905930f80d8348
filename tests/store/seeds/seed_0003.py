"""Rows for every table that revision 0003 creates (monitoring, leases)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO leases (name, holder, expires_at, acquired_at) VALUES ('seeded', 'seed', :now, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO monitor_rollups (grain, bucket, deployment, route, model_version, requests, errors, "
            "statuses, latency_ms_sum, latency_hist, ttft_hist, prompt_tokens, completion_tokens, cost_usd, "
            "feedback_count, feedback_sum, users, sessions, turns, regenerations) VALUES ('m', :now, 'seeded', "
            "'', '', 1, 0, '{\"200\": 1}', 12.5, '{\"128\": 1}', '{}', 3, 5, 0.001, 0, 0, 0, 0, 0, 0)"
        ),
        {"now": now},
    )
    conn.execute(
        text("INSERT INTO monitor_state (name, value, updated_at) VALUES ('seeded', '{}', :now)"),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO drift_reports (at, deployment, drifted, report) VALUES (:now, 'seeded', false, '{}')"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO alert_events (rule, subject, state, value, threshold, fired_at, sends, detail) "
            "VALUES ('seeded', 'seeded', 'firing', 2.0, 1.0, :now, 1, '{}')"
        ),
        {"now": now},
    )
    return {"leases": 1, "monitor_rollups": 1, "monitor_state": 1, "drift_reports": 1, "alert_events": 1}
