"""Connecting to the SQL store: SQLite in WAL mode by default, PostgreSQL by URL; migrations on open."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from corral.errors import StoreUnavailableError
from corral.store.migrate import current_revision, head_revision, upgrade

SQLITE_BUSY_TIMEOUT_MS = 30_000
READ_ONLY = "corral_read_only"  # execution option of Store.reader


def _sqlite_engine(url: str, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that every transaction is BEGIN IMMEDIATE:
        # writers from several processes then queue on the lock instead of failing mid-way.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Store.reading(): a deferred BEGIN, so that a read (a dashboard page, a report) never holds the
        # write lock the trace writer waits for (WAL: readers don't block)
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _timeouts(url: str, connect_s: float, statement_s: float) -> dict[str, Any]:
    """libpq settings so that a silent server (packets dropped, not refused) fails instead of hanging.

    connect_timeout bounds the connection handshake; statement_timeout a statement the server works on;
    tcp_user_timeout and keepalives a connection whose packets go unanswered.
    """
    if make_url(url).get_driver_name() not in ("psycopg", "psycopg2"):
        return {}
    args: dict[str, Any] = {
        "connect_timeout": max(1, round(connect_s)),
        "keepalives": 1,
        "keepalives_idle": max(1, round(connect_s)),
        "keepalives_interval": max(1, round(connect_s / 2)),
        "keepalives_count": 3,
    }
    if statement_s:
        args["tcp_user_timeout"] = int(statement_s * 1000)
        args["options"] = f"-c statement_timeout={int(statement_s * 1000)}"
    return args


class Store:
    """The SQL store: an engine, a session factory and the migration state."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        auto_upgrade: bool | None = None,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.statement_timeout_s = statement_timeout_s
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(url, echo)
        else:
            self.engine = create_engine(
                url,
                echo=echo,
                pool_pre_ping=True,
                pool_timeout=connect_timeout_s + statement_timeout_s,
                connect_args=_timeouts(url, connect_timeout_s, statement_timeout_s),
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # the same pool; its transactions only read (on SQLite they begin deferred: see _on_begin)
        self.reader = self.engine.execution_options(**{READ_ONLY: True})
        self._read_sessions = sessionmaker(self.reader, expire_on_commit=False)
        self._auto_upgrade = self.dialect == "sqlite" if auto_upgrade is None else auto_upgrade
        self._checked = False
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        s = settings.store
        return cls(
            s.resolved_url(),
            echo=s.echo,
            auto_upgrade=s.auto_upgrade,
            connect_timeout_s=s.connect_timeout_s,
            statement_timeout_s=s.statement_timeout_s,
        )

    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def ensure_ready(self) -> None:
        """Upgrade on first use when allowed; otherwise fail clearly if migrations are pending."""
        if self._checked:
            return
        with self._lock:
            if self._checked:
                return
            current, head = current_revision(self), head_revision()
            if current != head:
                if not self._auto_upgrade:
                    raise StoreUnavailableError(
                        f"the database at {self.safe_url()} is at revision {current or 'empty'}, not {head}",
                        hint="run `corral db upgrade`",
                    )
                upgrade(self)
            self._checked = True

    def create_if_empty(self) -> bool:
        """Create the schema in a database with no tables at all (what `corral init` is for); True if it did.
        A database at an older revision is left alone: upgrading one is `corral db upgrade`, on purpose."""
        if current_revision(self) is not None or self.table_names():
            return False
        upgrade(self)
        return True

    def session(self) -> AbstractContextManager[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        return self._transaction(self._sessions)

    def reading(self, session: Session | None = None) -> AbstractContextManager[Session]:
        """One transaction that only reads: on SQLite it takes no write lock (a write in it may fail with
        "database is locked" instead of waiting: write in `session()`).

        With `session`, that one instead, left open: a page that reads several things passes one
        session to all of them (one connection and one transaction instead of one each: on PostgreSQL
        most of a small read's time is those round trips)."""
        if session is not None:
            return nullcontext(session)
        return self._transaction(self._read_sessions)

    @contextmanager
    def _transaction(self, sessions: sessionmaker[Session]) -> Iterator[Session]:
        self.ensure_ready()
        try:
            with sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise StoreUnavailableError(
                f"the store at {self.safe_url()} failed: {str(exc.orig).strip().splitlines()[0]}"
            ) from None

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()
