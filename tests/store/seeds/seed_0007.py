"""Rows for what revision 0007 adds: a trace's search text (found by its index), a dashboard session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text("INSERT INTO trace_search (trace_id, at, body) VALUES (:id, :now, 'where is my seeded parcel')"),
        {"id": "s" * 32, "now": now},
    )
    conn.execute(
        text(
            "INSERT INTO dashboard_sessions (token_hash, key_hash, csrf, created_at, expires_at) "
            "VALUES (:t, :k, 'csrf', :now, :later)"
        ),
        {"t": "8" * 64, "k": "7" * 64, "now": now, "later": now + timedelta(hours=8)},
    )
    if conn.dialect.name == "sqlite":
        found = conn.execute(
            text("SELECT COUNT(*) FROM trace_search_fts WHERE trace_search_fts MATCH 'seeded'")
        )
    else:
        found = conn.execute(
            text(
                "SELECT COUNT(*) FROM trace_search WHERE search_tsv @@ plainto_tsquery('simple', 'seeded')"
            )
        )
    assert found.scalar_one() == 1, "the search index does not find the seeded row"
    return {"trace_search": 1, "dashboard_sessions": 1}
