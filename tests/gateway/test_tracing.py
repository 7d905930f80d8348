"""Traces are never lost: the spool takes what the store cannot, and a store outage under load loses none."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import openai
import orjson
import pytest
from sqlalchemy import text

from corral.config import TracingSettings
from corral.gateway.metrics import GatewayMetrics
from corral.gateway.tracing import TraceWriter
from corral.store import Store
from corral.store.traces import TraceRecord
from corral.testing.fault_proxy import FaultProxy

# the 30 s outage; CORRAL_TEST_OUTAGE_S shortens it for a quick local run
OUTAGE_S = float(os.environ.get("CORRAL_TEST_OUTAGE_S", "30"))


def _record(i: int, **fields: Any) -> TraceRecord:
    return TraceRecord(f"{i:032x}", datetime.now(UTC), "m", "chat", 200, **fields)


def _count(store: Store, table: str = "traces") -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def test_writer_spools_when_the_store_is_down_and_replays_without_duplicates(tmp_path, sqlite_url):
    store = Store(sqlite_url, auto_upgrade=True)
    settings = TracingSettings(flush_interval_s=0.02, spool_dir=str(tmp_path / "spool"), batch_size=10)
    writer = TraceWriter(store, settings, GatewayMetrics())
    writer.start()
    for i in range(25):
        writer.submit(_record(i))
    assert writer.flush()
    assert _count(store) == 25
    # a spool file holding rows already stored (a crash after commit) and new ones
    writer.spool.write([{"kind": "trace", **_record(i).row()} for i in range(20, 40)])
    deadline = time.monotonic() + 5
    while writer.spool.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(store) == 40 and not writer.spool.pending()
    writer.close()


def test_privacy_setting_keeps_no_message_bodies(tmp_path, sqlite_url):
    store = Store(sqlite_url, auto_upgrade=True)
    settings = TracingSettings(flush_interval_s=0.02, spool_dir=str(tmp_path / "spool"), store_bodies=False)
    writer = TraceWriter(store, settings)
    writer.start()
    writer.submit(_record(1, request={"messages": ["secret"]}, response={"x": 1}))
    writer.close()
    from sqlalchemy import select

    from corral.store.models import TraceRow

    with store.session() as session:
        assert session.execute(select(TraceRow.request, TraceRow.response)).one() == (None, None)


def test_a_full_spool_drops_and_counts_instead_of_growing(tmp_path):
    from corral.gateway.spool import Spool

    rows = [_record(i, request={"x": "x" * 100}).row() for i in range(5)]
    size = len(orjson.dumps(rows))
    spool = Spool(tmp_path, max_bytes=int(size * 1.5), warn_fraction=0.5)
    assert spool.write(rows) == 0
    assert spool.near_cap
    assert spool.write([_record(9, request={"x": "x" * size}).row()]) == 1 and spool.dropped == 1


@pytest.mark.postgres
@pytest.mark.slow
def test_store_outage_under_load_loses_no_trace(gateway, fake, h, postgres_url, tmp_path):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    proxy = FaultProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}},
        store={"database_url": proxied},
        tracing={"spool_dir": str(tmp_path / "spool"), "batch_size": 16},
    )
    store = Store(proxied, auto_upgrade=True)
    answered = 0
    lock = threading.Lock()
    stop = threading.Event()

    def load(c: openai.OpenAI) -> None:
        nonlocal answered
        while not stop.is_set():
            h.chat(c)
            with lock:
                answered += 1

    try:
        with gateway(settings, store=store) as gw:
            c = h.client(gw)
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(load, c) for _ in range(4)]
                time.sleep(0.5)
                proxy.outage()
                time.sleep(OUTAGE_S)
                during = gw.gateway.tracer.spool.bytes
                proxy.restore()
                time.sleep(0.5)
                stop.set()
                for f in futures:
                    f.result()
            assert during > 0  # the outage really sent traces to the spool
            deadline = time.monotonic() + 30
            while gw.gateway.tracer.spool.pending() and time.monotonic() < deadline:
                time.sleep(0.1)
        direct = Store(postgres_url)
        assert answered > 50
        assert _count(direct) == answered
        direct.dispose()
    finally:
        proxy.close()
        store.dispose()


def test_a_record_the_store_refuses_does_not_block_the_others(store, tmp_path):
    settings = TracingSettings(flush_interval_s=0.02, spool_dir=str(tmp_path / "spool"))
    writer = TraceWriter(store, settings)
    writer.start()
    writer.submit(
        _record(1, request={"messages": [{"role": "user", "content": "nul \x00 byte"}]}, user="a\x00b")
    )
    writer.submit(_record(2))
    writer.close()
    assert _count(store) == 2 and not writer.spool.pending()


def test_a_spool_nearing_its_cap_shows_in_metrics_and_logs(tmp_path, sqlite_url, caplog):
    from sqlalchemy.exc import OperationalError

    store = Store(sqlite_url, auto_upgrade=True)
    settings = TracingSettings(
        flush_interval_s=0.02,
        spool_dir=str(tmp_path / "spool"),
        spool_max_mb=0.01,  # about 10 kB
        spool_warn_fraction=0.5,
        batch_size=5,
    )
    metrics = GatewayMetrics()
    writer = TraceWriter(store, settings, metrics)

    def down(batch):  # type: ignore[no-untyped-def]
        raise OperationalError("INSERT", {}, Exception("connection refused"))

    writer._write = down  # type: ignore[method-assign]
    writer.start()
    for i in range(40):
        writer.submit(_record(i, request={"messages": [{"role": "user", "content": "x" * 200}]}))
    assert writer.flush()
    rendered = metrics.render().decode()
    assert "corral_trace_spool_near_cap 1.0" in rendered and "corral_store_up 0.0" in rendered
    assert writer.spool.near_cap
    assert any("full" in r.getMessage() and "spool" in r.getMessage() for r in caplog.records)
    writer.close()
