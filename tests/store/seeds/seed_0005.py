"""Rows for every table that revision 0005 creates (evaluation runs and items)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO eval_runs (id, target, target_kind, dataset, split, metrics, config, config_key, "
            "summary, status, item_count, error_count, duration_s, created_by, created_at) VALUES "
            "(:id, 'seeded@1', 'model', 'seeded@1', 'test', '[\"exact_match\"]', '{}', :key, "
            "'{\"exact_match\": {\"value\": 1.0}}', 'complete', 1, 0, 0.5, 'seed', :now)"
        ),
        {"now": now, "id": "d" * 32, "key": "k" * 64},
    )
    conn.execute(
        text(
            "INSERT INTO eval_items (run_id, position, request, prediction, reference, scores, latency_ms, "
            "prompt_tokens, completion_tokens, cost_usd) VALUES "
            "(:run, 0, '{}', 'a', 'a', '{\"exact_match\": 1.0}', 3.5, 2, 1, 0.0)"
        ),
        {"run": "d" * 32},
    )
    return {"eval_runs": 1, "eval_items": 1}
