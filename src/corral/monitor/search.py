"""Trace search: a full-text index (SQLite FTS5, PostgreSQL tsvector + GIN) and keyset-paginated queries.

The `trace_search` table and its index come with migration 0007; the rows are derived data, filled
by the rollup job for the minutes it rebuilds (never on the request path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, Text, and_, cast, column, exists, or_, select, text
from sqlalchemy.sql.elements import ColumnElement

from corral.errors import InvalidInputError
from corral.gateway.costs import answer_text, prompt_text
from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow

PAGE = 50
FEW = 2000
_WORD = re.compile(r"\w+", re.UNICODE)


class SearchIndex:
    def __init__(self, store: Store) -> None:
        self.store = store

    def index_range(self, start: datetime, end: datetime) -> int:
        """Index the traces in [start, end) not indexed yet; returns how many were read."""
        with self.store.session() as session:
            rows = session.execute(
                select(TraceRow.id, TraceRow.at, TraceRow.request, TraceRow.response)
                .where(TraceRow.at >= start, TraceRow.at < end)
            ).all()  # fmt: skip
        if not rows:
            return 0
        values = [
            {"id": r.id, "at": r.at, "body": f"{prompt_text(r.request or {})}\n{answer_text(r.response)}"}
            for r in rows
        ]
        verb = "INSERT OR IGNORE INTO" if self.store.dialect == "sqlite" else "INSERT INTO"
        tail = "" if self.store.dialect == "sqlite" else " ON CONFLICT (trace_id) DO NOTHING"
        with self.store.engine.begin() as conn:
            conn.execute(
                text(f"{verb} trace_search (trace_id, at, body) VALUES (:id, :at, :body){tail}"), values
            )
        return len(rows)

    def matching(self, query: str) -> ColumnElement[bool]:
        """A condition on TraceRow.id: the trace's prompt or answer has every word of `query`."""
        words = _WORD.findall(query)
        if not words:
            raise InvalidInputError("the search needs at least one word")
        self.store.ensure_ready()
        if self.store.dialect == "sqlite":
            fts = " ".join('"' + w.replace('"', "") + '"' for w in words)
            sub = text(
                "SELECT trace_id FROM trace_search WHERE rowid IN "
                "(SELECT rowid FROM trace_search_fts WHERE trace_search_fts MATCH :fts)"
            ).bindparams(fts=fts)
        else:
            sub = text(
                "SELECT trace_id FROM trace_search WHERE to_tsvector('simple', body) @@ "
                "plainto_tsquery('simple', :q)"
            ).bindparams(q=" ".join(words))
        # Few matches (the usual search for a known trace): look them up by primary key. Many: let the
        # database scan traces newest first and stop at a page, checking membership as it goes.
        with self.store.engine.connect() as conn:
            ids = list(
                conn.execute(text(f"{sub.text} LIMIT {FEW + 1}").bindparams(**sub.compile().params)).scalars()
            )
        if len(ids) <= FEW:
            return TraceRow.id.in_(ids)
        return TraceRow.id.in_(sub.columns(column("trace_id", String)))


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


def _conditions(f: TraceFilter, index: SearchIndex) -> list[ColumnElement[bool]]:
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
        at_text, _, last_id = f.after.partition("|")
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise InvalidInputError("bad page cursor") from None
        where.append(or_(TraceRow.at < at, and_(TraceRow.at == at, TraceRow.id < last_id)))
    if f.q:
        where.append(index.matching(f.q))
    return where


def search(index: SearchIndex, f: TraceFilter, limit: int = PAGE) -> tuple[list[dict[str, Any]], str | None]:
    """A page of traces, newest first, and the cursor of the next page (None on the last one)."""
    cols = (TraceRow.id, TraceRow.at, TraceRow.deployment, TraceRow.model_version, TraceRow.status,
            TraceRow.latency_ms, TraceRow.user, TraceRow.session, TraceRow.request, TraceRow.cost_usd)  # fmt: skip
    query = (
        select(*cols)
        .where(*_conditions(f, index))
        .order_by(TraceRow.at.desc(), TraceRow.id.desc())
        .limit(limit + 1)
    )
    with index.store.session() as session:
        rows = session.execute(query).all()
    page = [
        {"id": r.id, "at": r.at, "deployment": r.deployment, "version": r.model_version, "status": r.status,
         "latency_ms": r.latency_ms, "user": r.user, "session": r.session, "cost_usd": r.cost_usd,
         "prompt": prompt_text(r.request or {})[:160]}
        for r in rows[:limit]
    ]  # fmt: skip
    cursor = f"{page[-1]['at'].isoformat()}|{page[-1]['id']}" if len(rows) > limit else None
    return page, cursor


def like_search(store: Store, words: str, limit: int = PAGE) -> list[str]:
    """The plain way, for the benchmark: LIKE over the raw JSON of every trace, newest first."""
    conditions = [
        or_(cast(TraceRow.request, Text).like(f"%{w}%"), cast(TraceRow.response, Text).like(f"%{w}%"))
        for w in _WORD.findall(words)
    ]
    with store.session() as session:
        return list(
            session.scalars(select(TraceRow.id).where(*conditions).order_by(TraceRow.at.desc()).limit(limit))
        )
