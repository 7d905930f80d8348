"""Monitoring at scale: dashboard views from rollups vs the plain way over raw traces, SQLite and PostgreSQL.

Run: `python benchmarks/monitor_scale.py --traces 1000000` (default 1,000,000; `--stores sqlite,postgres`).
It generates a month of synthetic traces (three deployments, four versions, realistic prompt and answer
sizes), builds the rollups and the search index with the monitor's own job (timed: that is the
background cost), then times each dashboard view beside the same answer computed the plain way:
a GROUP BY over the traces table with percentiles from the raw latencies, LIKE for search, and for
drift the computation itself (the loop stores reports, so the dashboard only reads one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from corral.monitor.dashboard import pages
from corral.monitor.rollup import RollupJob
from corral.monitor.search import SearchIndex, TraceFilter, like_search, search
from corral.monitor.sketch import nearest_rank
from corral.monitor.windows import drift_report, latest_reports
from corral.store import Store
from corral.store.models import TraceRow
from corral.testing.traffic import bulk_insert_traces, synthetic_traces, trace_row

POSTGRES = os.environ.get("CORRAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Median seconds of `repeat` runs (after one warm-up)."""
    fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def plain_group(
    store: Store, since: datetime, until: datetime, by: list[Any], deployment: str | None = None
) -> Any:
    """Counts, tokens, cost by group and p50/p95/p99 from every raw latency: what a dashboard does without rollups."""
    where = [TraceRow.at >= since, TraceRow.at < until, TraceRow.shadow_of.is_(None)]
    if deployment:
        where.append(TraceRow.deployment == deployment)
    with store.session() as session:
        totals = session.execute(
            select(*by, func.count(), func.sum(TraceRow.prompt_tokens), func.sum(TraceRow.cost_usd))
            .where(*where).group_by(*by)
        ).all()  # fmt: skip
        latencies: dict[tuple[Any, ...], list[float]] = {}
        for *key, latency in session.execute(select(*by, TraceRow.latency_ms).where(*where)):
            latencies.setdefault(tuple(key), []).append(latency)
    return totals, {k: [nearest_rank(v, q) for q in (0.5, 0.95, 0.99)] for k, v in latencies.items()}


def hour_expr(store: Store) -> Any:
    return (
        func.substr(TraceRow.at, 1, 13) if store.dialect == "sqlite" else func.date_trunc("hour", TraceRow.at)
    )


class Progress:
    """One line on stderr, rewritten: done / total, rate, and time left."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.perf_counter()
        self._shown = 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self._shown < 0.5 and self.done < self.total:
            return
        self._shown = now
        rate = self.done / max(now - self.t0, 1e-9)
        left = (self.total - self.done) / rate if rate else 0.0
        print(f"\r{self.label}: {self.done:,}/{self.total:,} ({self.done / self.total:.0%}), "
              f"{rate:,.0f}/s, {left:.0f} s left   ", end="", file=sys.stderr, flush=True)  # fmt: skip
        if self.done >= self.total:
            print(file=sys.stderr)


def load(store: Store, n: int, now: datetime, batch_size: int = 20_000) -> float:
    """Bulk-load n synthetic traces (COPY on PostgreSQL, executemany on SQLite) plus three needles."""
    start = now - timedelta(days=30)
    t = time.perf_counter()
    progress = Progress(f"[{store.dialect}] inserting", n + 3)
    batch: list[dict[str, Any]] = []
    for row in synthetic_traces(n, start, timedelta(days=30), seed=11, users=5000,
                                deployments={"support": ["v1", "v2"], "search": ["v3"], "summarize": ["v1"]}):  # fmt: skip
        batch.append(row)
        if len(batch) == batch_size:
            bulk_insert_traces(store, batch)
            progress.step(len(batch))
            batch = []
    batch += [
        trace_row(f"{'needle':<26}{i:06d}".replace(" ", "0"), start + timedelta(days=9 * i + 1), "support",
                  prompt="Do you ship to Zanzibar?", answer="Yes, in five days.")
        for i in range(3)
    ]  # fmt: skip
    bulk_insert_traces(store, batch)
    progress.step(len(batch))
    return time.perf_counter() - t


def backfill(store: Store, now: datetime) -> float:
    """Build the rollups and the search index a day at a time (as the first monitor round would), shown."""
    t = time.perf_counter()
    job = RollupJob(store)
    start = (now - timedelta(days=31)).replace(hour=0, minute=0, second=0, microsecond=0)
    days = (now - start).days + 1
    progress = Progress(f"[{store.dialect}] rollups + search index (background job), days", days)
    for d in range(days):
        job.refresh(start + timedelta(days=d), min(start + timedelta(days=d + 1), now + timedelta(minutes=1)))
        progress.step()
    job.run_once(now)  # records where the job stopped; finds nothing left to rebuild
    return time.perf_counter() - t


def bench(store: Store, n: int) -> list[tuple[str, float, float]]:
    # noon UTC today: "today" on the overview always holds half a day of traces, whenever this runs
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    print(f"[{store.dialect}] {n:,} traces inserted in {load(store, n, now):.1f} s", flush=True)
    print(f"[{store.dialect}] rollups + search index built in {backfill(store, now):.1f} s (background job)",
          flush=True)  # fmt: skip
    with (
        store.engine.begin() as conn
    ):  # fresh tables have no planner statistics yet (autovacuum would add them)
        conn.exec_driver_sql("ANALYZE")
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    index = SearchIndex(store)
    drift_report(store, "support", (now - timedelta(days=8), now - timedelta(days=1)), (now - timedelta(days=1), now),
                 use_text=False)  # fmt: skip
    rows: list[tuple[str, float, float]] = []
    rows.append((
        "overview (today, all deployments)",
        timed(lambda: pages.overview(store, now)),
        timed(lambda: plain_group(store, day, now, [TraceRow.deployment]), 1),
    ))  # fmt: skip
    rows.append((
        "deployment page (24 h by hour and version)",
        timed(lambda: pages.deployment(store, "support", now, 24, "h")),
        timed(lambda: plain_group(store, now - timedelta(hours=24), now, [hour_expr(store), TraceRow.model_version],
                                  "support"), 1),
    ))  # fmt: skip
    rows.append((
        "deployment page (30 days by day and version)",
        timed(lambda: pages.deployment(store, "support", now, 24 * 30, "d")),
        timed(lambda: plain_group(store, now - timedelta(days=30), now, [TraceRow.model_version], "support"), 1),
    ))  # fmt: skip
    rows.append((
        "trace search ('damaged parcel', first page)",
        timed(lambda: search(index, TraceFilter(q="damaged parcel"))),
        timed(lambda: like_search(store, "damaged parcel"), 1),
    ))  # fmt: skip
    rows.append((
        "trace search (a rare word: 3 traces)",
        timed(lambda: search(index, TraceFilter(q="zanzibar"))),
        timed(lambda: like_search(store, "zanzibar"), 1),
    ))  # fmt: skip
    rows.append((
        "open a drift report (read) vs compute it",
        timed(lambda: latest_reports(store, "support", 1)),
        timed(lambda: drift_report(store, "support", (now - timedelta(days=8), now - timedelta(days=1)),
                                   (now - timedelta(days=1), now), use_text=False, save=False), 1),
    ))  # fmt: skip
    return rows


def postgres_store() -> tuple[Store, Callable[[], None]]:
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(POSTGRES).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"corral_bench_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    store = Store(
        make_url(POSTGRES).set(database=name).render_as_string(hide_password=False), auto_upgrade=True
    )

    def drop() -> None:
        store.dispose()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return store, drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    results: dict[str, list[tuple[str, float, float]]] = {}
    for kind in args.stores.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                store = Store(f"sqlite:///{tmp}/bench.db")
                results[kind] = bench(store, args.traces)
                store.dispose()
        else:
            store, drop = postgres_store()
            try:
                results[kind] = bench(store, args.traces)
            finally:
                drop()
    print(f"\n{args.traces:,} traces over 30 days; median of 3 runs (plain way: 1 run)")
    print("| view | store | corral (rollups / index) | plain way | speed-up |\n|---|---|---:|---:|---:|")
    for kind, rows in results.items():
        for view, fast, plain in rows:
            print(f"| {view} | {kind} | {fast * 1000:.1f} ms | {plain * 1000:.1f} ms | {plain / fast:.0f}x |")


if __name__ == "__main__":
    main()
