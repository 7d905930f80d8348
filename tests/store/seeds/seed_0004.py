"""Rows for what revision 0004 adds: a model version asking for a purge, a gateway heartbeat."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO model_versions (id, model_id, version, kind, artifact, lineage, metrics, tags, description, "
            "lifecycle, artifact_purged, purge_requested, created_by, created_at) VALUES (903, 901, 3, 'weights', "
            "'sha256:' || :h, '{}', '{}', '{}', '', 'draining', false, true, 'seed', :now)"
        ),
        {"now": now, "h": "3" * 64},
    )
    conn.execute(
        text(
            "INSERT INTO gateway_heartbeats (replica, host, pid, in_flight, at, expires_at) "
            "VALUES ('seeded', 'host', 1, '{\"seeded@3\": 1}', :now, :now)"
        ),
        {"now": now},
    )
    return {"model_versions": 1, "gateway_heartbeats": 1}
