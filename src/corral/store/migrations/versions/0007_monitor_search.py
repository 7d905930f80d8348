"""monitor search and sessions: the trace_search table and its text index, dashboard sessions

The search index used to be created by the monitor on first use; a database where that happened
keeps its table and index (the statements below skip what exists).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SQLITE_INDEX = [
    "CREATE VIRTUAL TABLE IF NOT EXISTS trace_search_fts USING fts5(body, content='trace_search', "
    "content_rowid='rowid')",
    # External-content FTS5 keeps no copy of the text: the triggers keep its index in step with the
    # table, so a row deleted (retention, erasing a user) leaves no words behind in the index.
    "CREATE TRIGGER IF NOT EXISTS trace_search_ai AFTER INSERT ON trace_search BEGIN "
    "INSERT INTO trace_search_fts(rowid, body) VALUES (new.rowid, new.body); END",
    "CREATE TRIGGER IF NOT EXISTS trace_search_ad AFTER DELETE ON trace_search BEGIN "
    "INSERT INTO trace_search_fts(trace_search_fts, rowid, body) VALUES ('delete', old.rowid, old.body); END",
    "CREATE TRIGGER IF NOT EXISTS trace_search_au AFTER UPDATE ON trace_search BEGIN "
    "INSERT INTO trace_search_fts(trace_search_fts, rowid, body) VALUES ('delete', old.rowid, old.body); "
    "INSERT INTO trace_search_fts(rowid, body) VALUES (new.rowid, new.body); END",
    # Rows indexed on first use before this revision outlived their traces (retention, erasure did not
    # know the table): remove them, the trigger above taking their words out of the index.
    "DELETE FROM trace_search WHERE trace_id NOT IN (SELECT id FROM traces)",
]
POSTGRES_INDEX = [
    # The words stored (a generated column), so a search that walks the newest rows by time tests each
    # row's words without parsing its text again; the GIN index finds rare words.
    "ALTER TABLE trace_search ADD COLUMN IF NOT EXISTS search_tsv tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple', body)) STORED",
    "CREATE INDEX IF NOT EXISTS ix_trace_search_tsv ON trace_search USING gin (search_tsv)",
    "DROP INDEX IF EXISTS ix_trace_search_body",  # the expression index made on first use before 0007
    "DELETE FROM trace_search WHERE trace_id NOT IN (SELECT id FROM traces)",
]


def upgrade() -> None:
    tables = sa.inspect(op.get_bind()).get_table_names()
    if "trace_search" not in tables:
        op.create_table(
            "trace_search",
            sa.Column("trace_id", sa.String(length=32), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("body", sa.Text(), nullable=False),
            sa.PrimaryKeyConstraint("trace_id"),
        )
    op.execute("CREATE INDEX IF NOT EXISTS ix_trace_search_at ON trace_search (at)")
    for statement in SQLITE_INDEX if op.get_bind().dialect.name == "sqlite" else POSTGRES_INDEX:
        op.execute(statement)
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dashboard_sessions_key_hash"), ["key_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_dashboard_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dashboard_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dashboard_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_dashboard_sessions_key_hash"))
    op.drop_table("dashboard_sessions")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("trace_search_ai", "trace_search_ad", "trace_search_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS trace_search_fts")
    op.execute("DROP INDEX IF EXISTS ix_trace_search_tsv")
    op.execute("DROP INDEX IF EXISTS ix_trace_search_at")
    op.drop_table("trace_search")
