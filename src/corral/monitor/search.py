"""Trace search: a full-text index (SQLite FTS5, PostgreSQL tsvector + GIN) and keyset-paginated queries.

The `trace_search` table and its index come with migration 0007; the rows are derived data, filled
by the rollup job for the minutes it rebuilds (never on the request path).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import DateTime, String, Text, and_, cast, column, exists, or_, select, text
from sqlalchemy.sql.elements import ColumnElement, TextClause

from corral.errors import InvalidInputError
from corral.gateway.costs import answer_text, prompt_text
from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow, TraceSearchRow


def json_object(raw: str | None) -> dict[str, Any] | None:
    """A trace's request or response column read as text (orjson, not the JSON type's stdlib parser)."""
    if raw is None:
        return None
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


INDEX_BATCH = 250
PAGE = 50
FEW = 200  # up to this many matches are looked up by key; more, newest first
_WORD = re.compile(r"\w+", re.UNICODE)


class SearchIndex:
    def __init__(self, store: Store, pause_s: float = 0.0) -> None:
        self.store = store
        self.pause_s = pause_s  # between index transactions (corral serve's rollup process: 5 ms)

    def index_range(self, start: datetime, end: datetime) -> int:
        """Index the traces in [start, end) not indexed yet; returns how many were indexed.

        Runs every monitor round, so it reads only traces the index lacks (a minute being filled is
        rebuilt every round) and their JSON as text, parsed by orjson: the stdlib decoder SQLAlchemy's
        JSON type uses, on every trace of those minutes, took seconds a round under load.
        """
        indexed = select(TraceSearchRow.trace_id).where(TraceSearchRow.trace_id == TraceRow.id)
        with self.store.engine.connect() as conn:  # a writing transaction: see RollupJob._minute_groups
            rows = conn.execute(
                select(TraceRow.id, TraceRow.at, cast(TraceRow.request, Text), cast(TraceRow.response, Text))
                .where(TraceRow.at >= start, TraceRow.at < end, ~exists(indexed))
                .order_by(TraceRow.at)  # rows indexed in time order keep a search's bound close (newest)
            ).all()  # fmt: skip
        if not rows:
            return 0
        values = [
            {"id": trace_id, "at": at, "body": f"{prompt_text(json_object(request) or {})}\n{answer_text(json_object(response))}"}
            for trace_id, at, request, response in rows
        ]  # fmt: skip
        verb = "INSERT OR IGNORE INTO" if self.store.dialect == "sqlite" else "INSERT INTO"
        tail = "" if self.store.dialect == "sqlite" else " ON CONFLICT (trace_id) DO NOTHING"
        statement = text(f"{verb} trace_search (trace_id, at, body) VALUES (:id, :at, :body){tail}")
        for i in range(0, len(values), INDEX_BATCH):  # short transactions: the trace writer never waits long
            if i and self.pause_s:
                time.sleep(self.pause_s)  # and gets the write lock between them
            with self.store.engine.begin() as conn:
                conn.execute(statement, values[i : i + INDEX_BATCH])
        return len(rows)

    def _words(self, query: str) -> list[str]:
        words = _WORD.findall(query)
        if not words:
            raise InvalidInputError("the search needs at least one word")
        self.store.ensure_ready()
        return words

    def _all_matches(self, words: list[str]) -> TextClause:
        if self.store.dialect == "sqlite":
            return text(
                "SELECT trace_id FROM trace_search WHERE rowid IN "
                "(SELECT rowid FROM trace_search_fts WHERE trace_search_fts MATCH :fts)"
            ).bindparams(fts=_fts(words))
        return text(
            "SELECT trace_id FROM trace_search WHERE search_tsv @@ plainto_tsquery('simple', :q)"
        ).bindparams(q=" ".join(words))

    def few(self, query: str) -> list[str] | None:
        """The ids of every trace matching `query` when there are at most FEW of them, else None."""
        words = self._words(query)
        if self.store.dialect == "sqlite":
            # the LIMIT inside: FTS5 stops after FEW + 1 matches (outside, SQLite would first collect every
            # match of a common word: 13 ms at a million traces)
            few = text(
                "SELECT trace_id FROM trace_search WHERE rowid IN (SELECT rowid FROM trace_search_fts "
                f"WHERE trace_search_fts MATCH :fts LIMIT {FEW + 1})"
            ).bindparams(fts=_fts(words))
            with self.store.reader.connect() as conn:
                ids = list(conn.execute(few).scalars())
            return ids if len(ids) <= FEW else None
        sub = self._all_matches(words)
        with self.store.reader.connect() as conn:
            ids = list(
                conn.execute(text(f"{sub.text} LIMIT {FEW + 1}").bindparams(**sub.compile().params)).scalars()
            )
        return ids if len(ids) <= FEW else None

    def matching(self, query: str) -> ColumnElement[bool]:
        """A condition on TraceRow.id: the trace's prompt or answer has every word of `query`."""
        ids = self.few(query)
        if ids is not None:
            return TraceRow.id.in_(ids)
        return TraceRow.id.in_(self._all_matches(self._words(query)).columns(column("trace_id", String)))

    def newest(self, query: str, k: int, before: datetime | None = None) -> Iterator[tuple[list[str], Any]]:
        """Growing sets of the newest matches (at or before `before`), each with a time `bound`: every
        match left out is at or before it (None: nothing is left out). Lets a page of a common word stop
        early instead of reading every match."""
        words = self._words(query)
        at = column("at", DateTime(timezone=True))
        # (a connection per round: none is held while the caller reads the page)
        if self.store.dialect != "sqlite":
            for size in (k, 8 * k, 64 * k):
                with self.store.reader.connect() as conn:
                    rows = conn.execute(text(
                        "SELECT trace_id, at FROM trace_search WHERE search_tsv @@ "
                        "plainto_tsquery('simple', :q)" + (" AND at <= :before" if before else "")
                        + " ORDER BY at DESC LIMIT :k"
                    ).bindparams(q=" ".join(words), k=size, **({"before": before} if before else {}))
                     .columns(column("trace_id", String), at)).all()  # fmt: skip
                yield [r.trace_id for r in rows], (rows[-1].at if len(rows) == size else None)
            return
        # SQLite: FTS5 reads its matches newest-indexed first and stops at LIMIT; the index is filled
        # in time order, so the bound (the newest trace indexed before the oldest candidate) is close.
        ids: list[str] = []
        lowest: int | None = None
        for size in (k, 4 * k, 16 * k, 64 * k):
            with self.store.reader.connect() as conn:
                rows = conn.execute(text(
                    "SELECT s.rowid AS r, s.trace_id FROM trace_search s WHERE s.rowid IN (SELECT rowid FROM "
                    "trace_search_fts WHERE trace_search_fts MATCH :fts" + (" AND rowid < :low" if lowest else "")
                    + " ORDER BY rowid DESC LIMIT :k)"
                ).bindparams(fts=_fts(words), k=size, **({"low": lowest} if lowest else {}))).all()  # fmt: skip
                ids += [r.trace_id for r in rows]
                if len(rows) < size:
                    bound = None
                else:
                    lowest = min(r.r for r in rows)
                    bound = conn.execute(text(
                        "SELECT at FROM trace_search INDEXED BY ix_trace_search_at WHERE rowid < :low "
                        "ORDER BY at DESC LIMIT 1"
                    ).bindparams(low=lowest).columns(at)).scalar()  # fmt: skip
            yield ids, bound
            if bound is None:
                return


def _fts(words: list[str]) -> str:
    return " ".join('"' + w.replace('"', "") + '"' for w in words)


@dataclass
class TraceFilter:
    q: str | None = None
    deployment: str | None = None
    version: str | None = None
    status: str | None = None  # "ok", "error" or a code
    user: str | None = None
    session: str | None = None
    feedback: str | None = None  # "any", "good" (≥ 0.5), "bad" (< 0.5)
    since: datetime | None = None
    until: datetime | None = None
    after: str | None = None  # keyset cursor: "<at iso>|<id>" of the last row of the previous page


def _conditions(f: TraceFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [TraceRow.shadow_of.is_(None)]
    for field_, value in ((TraceRow.deployment, f.deployment), (TraceRow.model_version, f.version),
                          (TraceRow.user, f.user), (TraceRow.session, f.session)):  # fmt: skip
        if value:
            where.append(field_ == value)
    if f.status == "ok":
        where.append(TraceRow.status < 400)
    elif f.status == "error":
        where.append(TraceRow.status >= 400)
    elif f.status:
        if not f.status.isdigit():
            raise InvalidInputError("status must be ok, error or an HTTP code")
        where.append(TraceRow.status == int(f.status))
    if f.feedback:
        has = select(FeedbackRow.id).where(FeedbackRow.trace_id == TraceRow.id)
        score = {"good": FeedbackRow.score >= 0.5, "bad": FeedbackRow.score < 0.5}.get(f.feedback)
        where.append(exists(has.where(score) if score is not None else has))
    if f.since:
        where.append(TraceRow.at >= f.since)
    if f.until:
        where.append(TraceRow.at < f.until)
    if f.after:
        at, last_id = _cursor(f.after)
        where.append(or_(TraceRow.at < at, and_(TraceRow.at == at, TraceRow.id < last_id)))
    return where


PAGE_COLUMNS = (TraceRow.id, TraceRow.at, TraceRow.deployment, TraceRow.model_version, TraceRow.status,
                TraceRow.latency_ms, TraceRow.user, TraceRow.session, TraceRow.request, TraceRow.cost_usd)  # fmt: skip


def _entry(r: Any) -> dict[str, Any]:
    return {"id": r.id, "at": r.at, "deployment": r.deployment, "version": r.model_version, "status": r.status,
            "latency_ms": r.latency_ms, "user": r.user, "session": r.session, "cost_usd": r.cost_usd,
            "prompt": prompt_text(r.request or {})[:160]}  # fmt: skip


def _cursor(after: str) -> tuple[datetime, str]:
    at_text, _, last_id = after.partition("|")
    try:
        return datetime.fromisoformat(at_text), last_id
    except ValueError:
        raise InvalidInputError("bad page cursor") from None


def search(index: SearchIndex, f: TraceFilter, limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """A page of traces, newest first, and the cursor of the next page (None on the last one)."""
    where = _conditions(f)

    def page_of(*more: ColumnElement[bool]) -> list[Any]:
        query = (
            select(*PAGE_COLUMNS)
            .where(*where, *more)
            .order_by(TraceRow.at.desc(), TraceRow.id.desc())
            .limit(limit + 1)
        )
        with index.store.reading() as session:
            return list(session.execute(query).all())

    rows: list[Any] | None = None
    if not f.q:
        rows = page_of()
    elif index.store.dialect != "sqlite" and (ids := index.few(f.q)) is not None:
        rows = page_of(TraceRow.id.in_(ids))  # few matches (a known trace): look them up by key
    else:  # many: the newest matches until a page is complete above the bound, else every match
        # (on SQLite the first round is the test for few: FTS5 reads the newest matches by rowid, so a
        # rare word's round holds every match, and a common word's page needs no second look at the index)
        before = _cursor(f.after)[0] if f.after else None
        for candidates, bound in index.newest(f.q, 2 * (limit + 1), before):
            found = page_of(
                TraceRow.id.in_(candidates), *([TraceRow.at > bound] if bound is not None else [])
            )
            if len(found) > limit or bound is None:
                rows = found
                break
        if rows is None:
            rows = page_of(index.matching(f.q))
    page = [_entry(r) for r in rows[:limit]]
    cursor = f"{page[-1]['at'].isoformat()}|{page[-1]['id']}" if len(rows) > limit else None
    return page, cursor


def like_search(store: Store, words: str, limit: int = PAGE) -> list[dict[str, Any]]:
    """The plain way, for the benchmark: the same page, found by LIKE over the raw JSON of every trace."""
    conditions = [
        or_(cast(TraceRow.request, Text).like(f"%{w}%"), cast(TraceRow.response, Text).like(f"%{w}%"))
        for w in _WORD.findall(words)
    ]
    query = select(*PAGE_COLUMNS).where(TraceRow.shadow_of.is_(None), *conditions)
    with store.reading() as session:
        rows = session.execute(query.order_by(TraceRow.at.desc(), TraceRow.id.desc()).limit(limit + 1)).all()
    return [_entry(r) for r in rows[:limit]]
