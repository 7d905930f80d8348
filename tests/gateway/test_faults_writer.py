"""The trace writer under poisoned records: what orjson cannot encode is stored cut down, and the writer runs on."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select

from corral.config import TracingSettings
from corral.gateway.http import parse_json_object
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.spool import Spool
from corral.gateway.tracing import TraceWriter
from corral.store import Store
from corral.store.models import TraceRow
from corral.store.traces import TraceRecord


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _record(i: int, **extra: Any) -> TraceRecord:
    return TraceRecord(f"{i:032x}", datetime.now(UTC), "m", "chat", 200, **extra)


def _stored(store: Store) -> dict[str, TraceRow]:
    with store.session() as session:
        return {row.id: row for row in session.scalars(select(TraceRow)).all()}


def _writer(tmp_path, url: str, **settings: Any) -> TraceWriter:
    tracing = TracingSettings(
        flush_interval_s=0.02, spool_dir=str(tmp_path / "spool"), batch_size=4, **settings
    )
    return TraceWriter(Store(url, auto_upgrade=True), tracing, GatewayMetrics())


def test_a_record_nested_past_orjsons_limit_is_stored_cut_down_and_the_writer_goes_on(tmp_path, sqlite_url):
    writer = _writer(tmp_path, sqlite_url)
    writer.start()
    writer.submit(_record(1, response={"choices": _nested(300)}, request={"n": 2**70}))
    for i in range(2, 10):
        writer.submit(_record(i))
    assert writer.flush()
    rows = _stored(writer.store)
    assert len(rows) == 9
    poisoned = rows[f"{1:032x}"]
    assert "encoding_error" in poisoned.meta
    assert poisoned.request == {"n": str(2**70)}
    assert orjson.dumps(poisoned.response)  # a cut-down copy that encodes
    assert all(t.is_alive() for t in writer._threads)
    writer.close()


def test_the_spool_takes_a_poisoned_record_while_the_store_is_down_and_replays_it(tmp_path, sqlite_url):
    writer = _writer(tmp_path, sqlite_url)
    writer.start()
    store = writer.store
    real_engine = store.engine
    from sqlalchemy import create_engine

    store.engine = create_engine("sqlite:////nonexistent/dir/x.db")  # every insert fails: the store is down
    writer.submit(_record(1, response={"choices": _nested(300)}))
    writer.submit(_record(2))
    assert writer.flush()
    deadline = time.monotonic() + 5
    while not writer.spool.pending() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.spool.pending() and not writer.store_up
    store.engine = real_engine
    deadline = time.monotonic() + 10
    while writer.spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = _stored(store)
    assert set(rows) == {f"{1:032x}", f"{2:032x}"} and "encoding_error" in rows[f"{1:032x}"].meta
    assert writer.store_up and all(t.is_alive() for t in writer._threads)
    writer.close()


def test_the_writer_survives_a_record_that_breaks_token_recounting(tmp_path, sqlite_url):
    writer = _writer(tmp_path, sqlite_url)
    writer.start()
    writer.submit(_record(1, tokens_estimated=True, tokenizer_dir=str(tmp_path / "not-a-tokenizer")))
    writer.submit(_record(2))
    assert writer.flush()
    assert len(_stored(writer.store)) == 2
    writer.close()


def test_spool_lines_always_encode(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    rows = [{"kind": "trace", **_record(1, response={"x": _nested(1000)}).row()}, _record(2).row()]
    assert spool.write(rows) == 0
    path = spool.oldest()
    assert path is not None
    records = list(spool.read(path))
    assert [r["id"] for r in records] == [f"{1:032x}", f"{2:032x}"]
    assert "encoding_error" in records[0]["meta"]


def test_request_bodies_nested_too_deep_are_refused():
    import pytest

    from corral.errors import InvalidInputError

    body = b'{"model": "m", "messages": ' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(InvalidInputError, match="nested more than"):
        parse_json_object(body)
    assert parse_json_object(orjson.dumps({"model": "m", "x": _nested(60)}))["model"] == "m"
    flat = orjson.dumps({"messages": [{"role": "user", "content": "x"}] * 500})
    assert len(parse_json_object(flat)["messages"]) == 500


def test_the_spool_drains_while_live_traces_keep_coming(tmp_path, sqlite_url):
    writer = _writer(tmp_path, sqlite_url)
    for n in range(3):  # three spool files left by an outage
        writer.spool.write([{"kind": "trace", **_record(1000 * (n + 1) + i).row()} for i in range(50)])
        writer.spool._current = None
    writer.start()
    i, deadline = 0, time.monotonic() + 20
    while writer.spool.pending() and time.monotonic() < deadline:
        for _ in range(4):  # a live batch every few milliseconds: the store thread never sits idle
            i += 1
            writer.submit(_record(i))
        time.sleep(0.005)
    assert not writer.spool.pending(), "the spool made no progress under load"
    assert writer.flush()
    assert len(_stored(writer.store)) == 150 + i
    writer.close()
