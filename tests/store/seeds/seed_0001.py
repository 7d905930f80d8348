"""Rows for every table that revision 0001 creates (the registry)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text


def seed(conn) -> dict[str, int]:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    conn.execute(
        text(
            "INSERT INTO models (id, name, description, tags, created_by, created_at) "
            "VALUES (901, 'seeded', '', '{}', 'seed', :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO model_versions (id, model_id, version, kind, artifact, lineage, metrics, tags, description, "
            "artifact_purged, created_by, created_at) VALUES (901, 901, 1, 'weights', 'sha256:' || :h, '{}', '{}', "
            "'{}', '', false, 'seed', :now)"
        ),
        {"now": now, "h": "0" * 64},
    )
    conn.execute(
        text(
            "INSERT INTO aliases (kind, owner_id, name, version, updated_at) VALUES ('model', 901, 'production', 1, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO alias_events (kind, owner_id, alias, from_version, to_version, actor, reason, is_rollback, at) "
            "VALUES ('model', 901, 'production', NULL, 1, 'seed', '', false, :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO datasets (id, name, description, created_by, created_at) VALUES (901, 'seeded', '', 'seed', :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO dataset_versions (dataset_id, version, digest, row_count, schema_kind, splits, tags, meta, "
            "lineage, created_by, created_at) VALUES (901, 1, 'sha256:x', 1, 'chat', '{}', '{}', '{}', '{}', 'seed', :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO prompts (id, name, description, created_by, created_at) VALUES (901, 'seeded', '', 'seed', :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO prompt_versions (prompt_id, version, template, variables, tags, created_by, created_at) "
            "VALUES (901, 1, '{\"text\": \"hi\"}', '[]', '{}', 'seed', :now)"
        ),
        {"now": now},
    )
    conn.execute(
        text(
            "INSERT INTO audit_log (at, actor, action, subject) VALUES (:now, 'seed', 'seed', 'model:seeded')"
        ),
        {"now": now},
    )
    tables = [
        "models",
        "model_versions",
        "aliases",
        "alias_events",
        "datasets",
        "dataset_versions",
        "prompts",
        "prompt_versions",
        "audit_log",
    ]
    return dict.fromkeys(tables, 1)
