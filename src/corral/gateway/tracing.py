"""The trace writer: requests hand it records; it batches them into the store, or the spool when it cannot.

Two threads keep the request path free of I/O: the pump takes records off an in-memory queue in
batches and passes them to the store thread, or straight to the disk spool when the store is down
or falling behind; the store thread inserts batches, spools a batch whose insert failed, and
replays the spool once the store answers again. Inserts skip ids already present, so a replay
after a crash never duplicates a trace.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Table, Text, bindparam, cast
from sqlalchemy.exc import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    StatementError,
)

from corral.config import TracingSettings
from corral.gateway.costs import exact_counter
from corral.gateway.feedback import RecentTraces
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.otlp import OtlpExporter
from corral.gateway.spool import Spool, encodable
from corral.guard.policy import redacted_copy
from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow
from corral.store.traces import Record, TraceRecord, record_from_dict

log = logging.getLogger("corral.gateway.tracing")
TABLES: dict[str, Table] = {"trace": TraceRow.__table__, "feedback": FeedbackRow.__table__}  # type: ignore[dict-item]


RETRY_S = 1.0
REPLAY_GAP_S = 0.1  # under load, at most one spool file replayed per this many seconds


@functools.lru_cache(maxsize=8)
def _statement(dialect: str, table: Table) -> Any:
    """An INSERT that skips ids already stored, taking JSON columns as text serialized by orjson.

    Serializing with orjson in the writer (instead of SQLAlchemy's json.dumps) is most of the
    writer's CPU time saved, which matters because the writer shares the GIL with the event loop.
    """
    values: dict[str, Any] = {}
    for column in table.columns:
        if isinstance(column.type, JSON):
            param = bindparam(column.name, type_=Text())
            values[column.name] = cast(param, column.type) if dialect == "postgresql" else param
        else:
            values[column.name] = bindparam(column.name, type_=column.type)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(values).on_conflict_do_nothing(index_elements=["id"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).values(values).on_conflict_do_nothing(index_elements=["id"])


def _json_columns(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.columns if isinstance(c.type, JSON))


JSON_COLUMNS = {table.name: _json_columns(table) for table in TABLES.values()}


def _prepared(row: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The row with its JSON columns as text; a value orjson refuses is stored cut down, with a note."""
    copy = dict(row)
    try:
        for name in names:
            value = copy[name]
            copy[name] = None if value is None else orjson.dumps(value, default=str).decode()
    except TypeError as exc:  # nested past orjson's limit, an integer past 64 bits
        safe = encodable(row, exc)
        copy = {k: safe[k] for k in row}
        for name in names:
            copy[name] = None if copy[name] is None else orjson.dumps(copy[name], default=str).decode()
        log.warning("trace %s could not be encoded as it was; stored cut down (%s)", row.get("id"), exc)
    return copy


@functools.lru_cache(maxsize=8)
def _sqlite_plan(table: Table) -> tuple[str, tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """`_statement` as plain SQL with positional parameters, its columns in order, and which of them
    hold JSON and which datetimes."""
    columns = tuple(c.name for c in table.columns)
    quoted, marks = ", ".join(f'"{name}"' for name in columns), ", ".join("?" for _ in columns)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING'
    json_at = tuple(i for i, c in enumerate(table.columns) if isinstance(c.type, JSON))
    time_at = tuple(i for i, c in enumerate(table.columns) if isinstance(c.type, DateTime))
    return sql, columns, json_at, time_at


def _sqlite_fast(store: Store, table: Table, records: list[Any]) -> bool:
    """Insert records on SQLite straight from their attributes, as tuples for the driver: SQLAlchemy's
    per-parameter processing was most of the writer's time, spent holding the GIL the event loop needs.

    False, having written nothing, when a batch needs `_insert`'s careful path (a value orjson
    refuses, a column a record lacks, data the store rejects).
    """
    sql, columns, json_at, time_at = _sqlite_plan(table)
    dumps = orjson.dumps
    params = []
    try:
        for record in records:
            values = [getattr(record, c) for c in columns]
            for i in json_at:
                if values[i] is not None:
                    values[i] = dumps(values[i], default=str).decode()
            for i in time_at:  # SQLAlchemy's own text form of a DateTime on SQLite (what it reads back)
                if isinstance(values[i], datetime):
                    values[i] = values[i].strftime("%Y-%m-%d %H:%M:%S.%f")
            params.append(tuple(values))
    except (AttributeError, TypeError):
        return False
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql(sql, params)
    except (DataError, IntegrityError, ProgrammingError, StatementError) as exc:
        if isinstance(exc, OperationalError | InterfaceError):
            raise  # the store is down, not the data bad: spool and retry
        return False
    return True


def _insert(store: Store, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose id is already stored (a replay of a batch that did commit)."""
    names = JSON_COLUMNS[table.name]
    prepared = [_prepared(row, names) for row in rows]
    with store.engine.begin() as conn:
        conn.execute(_statement(store.dialect, table), prepared)


class TraceWriter:
    """Batches traces and feedback into the store off the request path; loses none when the store is down."""

    def __init__(
        self, store: Store, settings: TracingSettings, metrics: GatewayMetrics | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.spool = Spool(
            settings.resolved_spool_dir(),
            int(settings.spool_max_mb * 1024 * 1024),
            settings.spool_warn_fraction,
        )
        self._records: deque[Record] = deque()
        self.recent = RecentTraces()  # who made each recent trace, to check feedback on it
        self._batches: queue.Queue[list[Record]] = queue.Queue(
            maxsize=max(2, settings.queue_size // settings.batch_size)
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._store_up = True
        self._retry_at = 0.0
        self._writing_since: float | None = None  # a store write in progress (a silent store never returns)
        self._stall_s = max(1.0, store.statement_timeout_s or 30.0)
        self._replay_at = 0.0
        self._threads: list[threading.Thread] = []
        self.submitted = 0
        self.settled = 0  # records committed to the store or written to the spool
        self._settle_lock = threading.Lock()
        self.exporter: OtlpExporter | None = None
        if settings.otlp_endpoint:
            self.exporter = OtlpExporter(
                settings.otlp_endpoint,
                self.metrics,
                headers=settings.otlp_headers,
                timeout_s=settings.otlp_timeout_s,
            )

    # -- request path ------------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Queue one trace or feedback record (never blocks, never touches disk or network)."""
        if isinstance(record, TraceRecord):
            self.recent.remember(record.id, record.key_id, record.deployment)
        self.submitted += 1
        self._records.append(record)
        if len(self._records) >= self.settings.batch_size:
            self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.store.ensure_ready()
        if self.exporter is not None:
            self.exporter.start()
        for target, name in ((self._pump, "corral-trace-pump"), (self._store_loop, "corral-trace-store")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush: everything queued reaches the store or the spool before this returns."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        self._threads = []
        leftovers = self._take(len(self._records))
        while True:
            try:
                leftovers.extend(self._batches.get_nowait())
            except queue.Empty:
                break
        if leftovers:
            self._export(leftovers)
            self._deliver(leftovers)
        # what went to the spool under load reaches the store now, while the drain's time lasts (the
        # rest waits on disk for the next start)
        while self._store_up and self.spool.pending() and time.monotonic() < deadline:
            self._replay_one()
        if self.exporter is not None:
            self.exporter.close()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything submitted so far is stored or spooled (for tests and shutdown)."""
        target = self.submitted
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while time.monotonic() < deadline:
            if self.settled >= target:
                return True
            time.sleep(0.01)
        return False

    @property
    def store_up(self) -> bool:
        return self._store_up

    # -- threads -------------------------------------------------------------------------------------
    def _take(self, limit: int) -> list[Record]:
        out: list[Record] = []
        while self._records and len(out) < limit:
            out.append(self._prepare(self._records.popleft()))
        return out

    def _prepare(self, record: Record) -> Record:
        if isinstance(record, TraceRecord):
            if record.tokens_estimated and record.tokenizer_dir:
                try:
                    count = exact_counter(record.tokenizer_dir)
                    if count is not None:  # before bodies are dropped: the tokenizer counts their text
                        record.recount(count)
                except Exception as exc:  # noqa: BLE001 - a broken tokenizer keeps the estimate, not the writer down
                    log.warning("could not recount tokens of trace %s: %s", record.id, exc)
            if self.settings.store_bodies is False:
                record.drop_bodies()
            elif self.settings.store_bodies == "redacted":
                record.request, record.response = (
                    redacted_copy(record.request),
                    redacted_copy(record.response),
                )
        return record

    def _pump(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.flush_interval_s)
            self._wake.clear()
            try:
                self._watch_store()
                self._pump_once()
            except Exception:  # noqa: BLE001 - the writer outlives any record
                log.exception("the trace pump failed on a batch; it carries on")

    def _pump_once(self) -> None:
        while self._records:
            batch = self._take(self.settings.batch_size)
            self._export(batch)
            backlog = len(self._records) > self.settings.queue_size
            if self._store_up and not backlog:
                try:
                    self._batches.put(batch, timeout=0.05)
                    continue
                except queue.Full:
                    pass
            self._to_spool(batch)
        self.metrics.trace_queue.set(len(self._records) + self._batches.qsize() * self.settings.batch_size)

    def _watch_store(self) -> None:
        """A write that has not returned in the store's statement timeout means the store is down."""
        since = self._writing_since
        if since is not None and self._store_up and time.monotonic() - since > self._stall_s:
            self._mark(False, TimeoutError(f"a write has not returned in {self._stall_s:g} s"))

    def _export(self, batch: list[Record]) -> None:
        if self.exporter is not None:
            self.exporter.offer(batch)

    def _store_loop(self) -> None:
        while not (self._stop.is_set() and self._batches.empty()):
            try:
                self._store_once()
            except Exception:  # noqa: BLE001 - the writer outlives any record
                log.exception("the trace writer failed on a batch; it carries on")

    def _store_once(self) -> None:
        try:
            batch = self._batches.get(timeout=0.2)
        except queue.Empty:
            batch = None
        if batch is not None:
            self._deliver(batch)
        # replay between live batches too, or a spool never drains while traffic keeps coming
        now = time.monotonic()
        due = now >= self._retry_at and now >= self._replay_at
        if due and self.spool.pending() and not self._stop.is_set():
            self._replay_at = now + (REPLAY_GAP_S if batch is not None else 0.0)
            self._replay_one()

    def _deliver(self, batch: list[Record]) -> None:
        try:
            self._write(batch)
            self._settle(len(batch))
            self._mark(True)
        except Exception as exc:  # noqa: BLE001 - any store failure means: keep the batch on disk
            self._mark(False, exc)
            try:
                self._to_spool(batch)
            except Exception:  # noqa: BLE001 - a full disk: count the loss, keep running
                log.exception("could not spool %d traces; they are dropped", len(batch))
                self._settle(len(batch))
                self.metrics.traces_dropped.inc(len(batch))

    def _write(self, batch: list[Record]) -> None:
        self._writing_since = time.monotonic()
        try:
            self._write_kinds(batch)
        finally:
            self._writing_since = None

    def _write_kinds(self, batch: list[Record]) -> None:
        by_kind: dict[str, list[Record]] = {}
        for record in batch:
            by_kind.setdefault(record.KIND, []).append(record)
        for kind, records in by_kind.items():
            if self.store.dialect == "sqlite" and _sqlite_fast(self.store, TABLES[kind], records):
                if kind == "trace":
                    self.metrics.traces_written.inc(len(records))
                continue
            rows = [record.row() for record in records]
            try:
                _insert(self.store, TABLES[kind], rows)
            except (DataError, IntegrityError, ProgrammingError, StatementError) as exc:
                if isinstance(exc, OperationalError | InterfaceError):
                    raise  # the store is down, not the data bad: spool and retry
                self._insert_one_by_one(TABLES[kind], rows)
            if kind == "trace":
                self.metrics.traces_written.inc(len(rows))

    def _insert_one_by_one(self, table: Table, rows: list[dict[str, Any]]) -> None:
        """A batch the store rejected for its data: store each row, cleaning what it refuses (NUL characters)."""
        for row in rows:
            try:
                _insert(self.store, table, [row])
            except (DataError, ProgrammingError, StatementError):
                cleaned = orjson.loads(orjson.dumps(row, default=str).replace(b"\\u0000", b""))
                cleaned["at"] = row.get("at")
                try:
                    _insert(self.store, table, [cleaned])
                    log.warning("stored trace %s without the characters the store refused", row.get("id"))
                except (DataError, ProgrammingError, StatementError) as exc:
                    log.error("the store refuses trace %s (%s); it is dropped", row.get("id"), exc)
                    self.metrics.traces_dropped.inc()

    def _replay_one(self) -> None:
        path = self.spool.oldest()
        if path is None:
            return
        records = [record_from_dict(line) for line in self.spool.read(path)]
        try:
            for start in range(0, len(records), 1000):
                self._write(records[start : start + 1000])
        except Exception as exc:  # noqa: BLE001
            self._mark(False, exc)
            return
        self.spool.remove(path)
        self._mark(True)
        log.info("replayed %d spooled records from %s", len(records), path.name)
        self._spool_metrics()

    def _to_spool(self, batch: list[Record]) -> None:
        dropped = self.spool.write([{"kind": r.KIND, **r.row()} for r in batch])
        self._settle(len(batch))
        self.metrics.traces_spooled.inc(len(batch) - dropped)
        if dropped:
            self.metrics.traces_dropped.inc(dropped)
        self._spool_metrics()

    def _settle(self, count: int) -> None:
        with self._settle_lock:
            self.settled += count

    def _spool_metrics(self) -> None:
        self.metrics.spool_bytes.set(self.spool.bytes)
        self.metrics.spool_near_cap.set(1 if self.spool.near_cap else 0)

    def _mark(self, up: bool, exc: BaseException | None = None) -> None:
        if up != self._store_up:
            if up:
                log.warning("trace store is back; replaying the spool")
            else:
                log.error("trace store unavailable (%s); spooling traces to %s", exc, self.spool.directory)
        self._store_up = up
        self.metrics.store_up.set(1 if up else 0)
        if not up:
            self._retry_at = time.monotonic() + RETRY_S
