"""The bulk loader the scale benchmark uses stores traces exactly as the ORM insert does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from corral.store.models import TraceRow
from corral.testing.traffic import bulk_insert_traces, insert_traces, synthetic_traces


def _read(store, ids):  # type: ignore[no-untyped-def]
    with store.session() as session:
        found = session.scalars(select(TraceRow).where(TraceRow.id.in_(ids)).order_by(TraceRow.at)).all()
        return [{c.name: getattr(r, c.name) for c in TraceRow.__table__.columns if c.name != "id"} for r in found]


def test_bulk_insert_stores_what_insert_traces_stores(store):
    start = datetime(2026, 12, 1, tzinfo=UTC)
    rows = list(synthetic_traces(60, start, timedelta(hours=1), seed=4))
    rows[0]["request"], rows[0]["response"] = None, None
    plain = [{**r, "id": "p" + r["id"][1:]} for r in rows]
    bulk = [{**r, "id": "b" + r["id"][1:]} for r in rows]
    insert_traces(store, plain)
    bulk_insert_traces(store, bulk)
    for a, b in zip(_read(store, [r["id"] for r in plain]), _read(store, [r["id"] for r in bulk]), strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert len(_read(store, [r["id"] for r in bulk])) == 60
