"""Trace search: the index migration 0007 makes finds words, and forgets traces that are deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from corral.monitor import search as search_module
from corral.monitor.search import SearchIndex, TraceFilter, search
from corral.privacy.retention import purge_expired
from corral.store.models import TraceSearchRow
from corral.testing.traffic import insert_traces, trace_row

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def test_search_finds_a_word_of_a_prompt_or_answer_and_retention_removes_it_from_the_index(store):
    old, new = "0" * 31 + "1", "0" * 31 + "2"
    insert_traces(store, [
        trace_row(old, NOW - timedelta(days=40), "support", prompt="Do you ship to Zanzibar?", answer="Yes."),
        trace_row(new, NOW - timedelta(hours=1), "support", prompt="Hello", answer="We ship to Zanzibar too."),
    ])  # fmt: skip
    index = SearchIndex(store)
    assert index.index_range(NOW - timedelta(days=60), NOW) == 2
    assert index.index_range(NOW - timedelta(days=60), NOW) == 0  # again: nothing read or indexed twice
    found, _ = search(index, TraceFilter(q="zanzibar"))
    assert [r["id"] for r in found] == [new, old]
    assert purge_expired(store, 30, now=NOW)["traces"] == 1
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(TraceSearchRow)) == 1
    found, _ = search(index, TraceFilter(q="zanzibar"))
    assert [r["id"] for r in found] == [new]
    if store.dialect == "sqlite":  # the FTS index itself holds no word of the deleted trace
        with store.engine.connect() as conn:
            hits = conn.exec_driver_sql("SELECT COUNT(*) FROM trace_search_fts WHERE trace_search_fts MATCH 'ship'")
            assert hits.scalar_one() == 1


@pytest.mark.parametrize("indexed", ["oldest first", "newest first"])
def test_pages_of_a_common_word_are_exact_whichever_order_traces_were_indexed(store, monkeypatch, indexed):
    monkeypatch.setattr(search_module, "FEW", 5)  # more matches than "few": the newest-first path
    rows = [trace_row(f"{i:032x}", NOW - timedelta(minutes=i), "support" if i % 3 else "search",
                      prompt=f"parcel {i}" if i % 4 else f"invoice {i}") for i in range(240)]  # fmt: skip
    insert_traces(store, rows)
    index = SearchIndex(store)
    hours = [NOW - timedelta(hours=h) for h in range(5, -1, -1)]
    spans = list(zip(hours, [*hours[1:], NOW + timedelta(minutes=1)], strict=True))
    for start, end in spans if indexed == "oldest first" else spans[::-1]:
        index.index_range(start, end)
    for f in (TraceFilter(q="parcel"), TraceFilter(q="parcel", deployment="search")):
        expected = [r["id"] for r in sorted(rows, key=lambda r: r["at"], reverse=True)
                    if "parcel" in r["request"]["messages"][0]["content"]
                    and f.deployment in (None, r["deployment"])]  # fmt: skip
        seen: list[str] = []
        while True:
            page, cursor = search(index, f, limit=7)
            seen += [r["id"] for r in page]
            if cursor is None:
                break
            f = TraceFilter(q=f.q, deployment=f.deployment, after=cursor)
        assert seen == expected
