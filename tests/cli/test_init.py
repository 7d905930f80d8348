"""`corral init` on a real PostgreSQL: it creates the schema in an empty database, never upgrades an old one."""

from __future__ import annotations

import pytest
from tests.cli.test_cli import one_line_error, run

from corral.store import Store
from corral.store.migrate import current_revision, head_revision, revisions, upgrade


def test_init_creates_the_schema_in_an_empty_postgres_database(capsys, monkeypatch, postgres_url, tmp_path):
    monkeypatch.setenv("CORRAL_DATABASE_URL", postgres_url)
    code, out, err = run(capsys, "init")
    assert code == 0, err
    assert "created the schema in the empty database" in out and (tmp_path / "corral.yaml").is_file()
    store = Store(postgres_url)
    assert current_revision(store) == head_revision()
    store.dispose()
    code, out, err = run(capsys, "init")  # a second time: nothing to create, and fine
    assert code == 0 and "created the schema" not in out, err
    assert run(capsys, "models", "list")[0] == 0


def test_init_leaves_an_older_database_for_an_explicit_upgrade(capsys, monkeypatch, postgres_url):
    if len(revisions()) < 2:
        pytest.skip("needs two revisions")
    store = Store(postgres_url)
    upgrade(store, revisions()[0])
    store.dispose()
    monkeypatch.setenv("CORRAL_DATABASE_URL", postgres_url)
    code, _, err = run(capsys, "init")
    assert code == 6 and "run `corral db upgrade`" in one_line_error(err)
