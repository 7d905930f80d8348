"""Rows for every table that revision 0002 creates (the gateway)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO api_keys (name, key_hash, prefix, models, rpm, tpm, budget_usd, is_admin, created_by, "
            "created_at) VALUES ('seeded', :h, 'sk-seed', '[\"*\"]', 60, NULL, 5.0, false, 'seed', :now)"
        ),
        {"now": now, "h": "a" * 64},
    )
    conn.execute(
        text(
            "INSERT INTO deployments (name, spec, source, updated_by, updated_at) "
            "VALUES ('seeded', :spec, 'file', 'seed', :now)"
        ),
        {"now": now, "spec": '{"routes": [{"url": "http://127.0.0.1:1/v1", "model": "m"}]}'},
    )
    conn.execute(
        text(
            "INSERT INTO traces (id, at, day, deployment, endpoint, prompt_tokens, completion_tokens, "
            "tokens_estimated, cost_usd, latency_ms, status, stream, meta) VALUES "
            "(:id, :now, '2026-01-01', 'seeded', 'chat', 3, 5, false, 0.001, 12.5, 200, false, '{}')"
        ),
        {"now": now, "id": "f" * 32},
    )
    conn.execute(
        text("INSERT INTO feedback (id, trace_id, score, at) VALUES (:id, :trace, 1.0, :now)"),
        {"now": now, "id": "e" * 32, "trace": "f" * 32},
    )
    return {"api_keys": 1, "deployments": 1, "traces": 1, "feedback": 1}
