"""Rows for every table that revision 0006 creates (pipeline runs and stages), and a feedback correction."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO pipeline_runs (id, pipeline, file, spec, trigger, status, started_at) VALUES "
            "(:id, 'refresh', 'refresh.yaml', '{}', 'manual', 'running', :now)"
        ),
        {"id": "e" * 32, "now": now},
    )
    conn.execute(
        text(
            "INSERT INTO pipeline_stages (run_id, name, position, status, inputs, output, attempts, "
            "started_at) VALUES (:run, 'collect', 0, 'done', '{}', '{\"rows\": 3}', 1, :now)"
        ),
        {"run": "e" * 32, "now": now},
    )
    conn.execute(
        text(
            "INSERT INTO feedback (id, trace_id, score, source, correction, at) VALUES "
            "(:id, :trace, 0.0, 'user', 'the right answer', :now)"
        ),
        {"id": "f" * 31 + "6", "trace": "a" * 32, "now": now},
    )
    return {"pipeline_runs": 1, "pipeline_stages": 1, "feedback": 1}
