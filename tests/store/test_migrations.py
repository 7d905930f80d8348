"""Migrations: empty → head → base on both databases, and no row lost when upgrading seeded data.

Each revision NNNN needs a seeder tests/store/seeds/seed_NNNN.py with `seed(conn) -> {table: rows}`
that inserts rows into the tables that revision adds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from corral.errors import StoreUnavailableError
from corral.store import Base, Store
from corral.store.migrate import current_revision, downgrade, head_revision, include_name, revisions, upgrade

SEEDS = Path(__file__).parent / "seeds"


def _seeder(revision: str):  # type: ignore[no-untyped-def]
    path = SEEDS / f"seed_{revision}.py"
    if not path.exists():
        pytest.fail(
            f"migration {revision} has no seeder: add tests/store/seeds/seed_{revision}.py (see module docstring)"
        )
    spec = importlib.util.spec_from_file_location(f"seed_{revision}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.seed


def _count(store: Store, table: str) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_upgrade_empty_database_to_head_and_back_down(db_url):
    store = Store(db_url, auto_upgrade=False)
    assert current_revision(store) is None
    upgrade(store)
    assert current_revision(store) == head_revision()
    assert set(Base.metadata.tables) <= set(inspect(store.engine).get_table_names())
    downgrade(store, "base")
    assert current_revision(store) is None
    assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
    store.dispose()


def test_rows_seeded_at_each_revision_survive_every_upgrade(db_url):
    store = Store(db_url, auto_upgrade=False)
    expected: dict[str, int] = {}
    for revision in revisions():
        upgrade(store, revision)
        for table, count in expected.items():
            assert _count(store, table) >= count, f"upgrading to {revision} lost rows of {table}"
        with store.engine.begin() as conn:
            for table, count in _seeder(revision)(conn).items():
                expected[table] = expected.get(table, 0) + count
    upgrade(store)
    for table, count in expected.items():
        assert _count(store, table) >= count
    store.dispose()


def test_models_match_the_migrations(db_url):
    """The ORM models and the migrated schema agree (nobody changed a model without a migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = Store(db_url, auto_upgrade=False)
    upgrade(store)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"include_name": include_name}), Base.metadata)
    assert diff == [], f"models differ from migrations: {diff}"
    store.dispose()


def test_sqlite_is_upgraded_on_first_use_and_postgres_asks_for_db_upgrade(sqlite_url, postgres_url):
    fresh = Store(sqlite_url)
    with fresh.session() as session:
        session.execute(text("SELECT COUNT(*) FROM models"))
    assert current_revision(fresh) == head_revision()
    pg = Store(postgres_url)
    with pytest.raises(StoreUnavailableError, match="run `corral db upgrade`"), pg.session():
        pass
    pg.dispose()


def test_sqlite_store_uses_wal(sqlite_url):
    store = Store(sqlite_url)
    store.ensure_ready()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_unreachable_store_is_a_clear_error():
    store = Store("postgresql+psycopg://nobody@127.0.0.1:9/none")
    with pytest.raises(StoreUnavailableError, match="cannot reach the store"):
        store.ensure_ready()
