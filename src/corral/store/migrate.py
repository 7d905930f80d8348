"""Alembic, driven from code: the migration scripts ship inside the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from corral.errors import StoreUnavailableError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class Store(Protocol):
    """What migrating needs of a store (`corral.store.db.Store`, which imports this module)."""

    engine: Engine

    def safe_url(self) -> str: ...


# Made by raw SQL in migration 0007, outside the models: the FTS5 table behind `trace_search` (and
# the shadow tables SQLite keeps for it), PostgreSQL's generated tsvector column and its GIN index.
# Autogenerate leaves them alone.
SEARCH_INDEX_OBJECTS = ("trace_search_fts", "search_tsv", "ix_trace_search_tsv")


def include_name(name: str | None, type_: Any, parents: Any) -> bool:
    """Alembic's `include_name` hook: False for the search index's objects, which no model declares."""
    return not (name or "").startswith(SEARCH_INDEX_OBJECTS)


def alembic_config(store: Store | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if store is not None:
        cfg.attributes["engine"] = store.engine
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def current_revision(store: Store) -> str | None:
    try:
        with store.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise StoreUnavailableError(
            f"cannot reach the store at {store.safe_url()}: {str(exc.orig).strip().splitlines()[0]}",
            hint="check CORRAL_DATABASE_URL and that the server is running",
        ) from None


def upgrade(store: Store, revision: str = "head") -> None:
    command.upgrade(alembic_config(store), revision)


def downgrade(store: Store, revision: str) -> None:
    command.downgrade(alembic_config(store), revision)
