"""Store.reading(): read transactions that never take (or wait for) SQLite's write lock."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import event, func, select

from corral.errors import StoreUnavailableError
from corral.store import Store
from corral.store.models import TraceRow


def test_a_read_runs_while_another_connection_holds_the_write_lock(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.ensure_ready()
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with store.session() as session:  # BEGIN IMMEDIATE: holds the write lock until the block ends
            session.connection().exec_driver_sql("CREATE TABLE held (x)")
            writing.set()
            done.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    assert writing.wait(10)
    try:
        with store.reading() as session:  # deferred: answers at once, from the last committed state
            assert session.scalar(select(func.count()).select_from(TraceRow)) == 0
        with store.reader.connect() as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        done.set()
        t.join(10)


def test_a_read_transaction_that_fails_names_the_store(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(StoreUnavailableError, match="s.db failed"), store.reading() as session:
        session.connection().exec_driver_sql("SELECT * FROM no_such_table")


def test_writes_still_begin_immediate(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.ensure_ready()
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def _record(conn, cursor, statement, *args):  # noqa: ANN001
        seen.append(statement)

    with store.session() as session:
        session.connection().exec_driver_sql("SELECT 1")
    with store.reading() as session:
        session.connection().exec_driver_sql("SELECT 1")
    assert [s for s in seen if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE", "BEGIN"]


def test_a_given_session_is_joined_and_left_open(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    with store.session() as outer:
        with store.reading(outer) as joined:
            assert joined is outer
        assert outer.is_active  # not closed by the inner block: the caller's transaction goes on
