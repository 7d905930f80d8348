"""The rollup job in a child process, for `corral serve`: a round parses and aggregates every new trace,
CPU that on the gateway's own thread held the GIL its event loop needs (a round over 100k traces
stalled requests for seconds: p99 62 ms against 16 at 4k requests/s). The child is started once
(spawned, so it shares nothing with the server's threads), reused every round, and runs at a lower
CPU priority: where cores are few, answering requests comes first and a round simply takes longer.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from typing import Any

log = logging.getLogger("corral.monitor")

NICENESS = 19
INDEX_PAUSE_S = 0.005  # between the search index's write transactions: the trace writer's turn
_job: Any = None  # in the child: the RollupJob of its store, built by the first round


def _round(url: str, statement_timeout_s: float, lookback_s: float, now: datetime | None) -> int:
    global _job
    if _job is None:
        from corral.monitor.rollup import RollupJob
        from corral.store import Store

        with contextlib.suppress(OSError):  # background work: under contention requests come first
            os.nice(NICENESS)
        store = Store(url, auto_upgrade=False, statement_timeout_s=statement_timeout_s)
        _job = RollupJob(store, lookback_s=lookback_s, index_pause_s=INDEX_PAUSE_S)
    return int(_job.run_once(now))


class RollupProcess:
    """`run_once` as RollupJob's, run in a child process; a child that dies is replaced next round."""

    def __init__(self, url: str, lookback_s: float, statement_timeout_s: float = 30.0) -> None:
        self.url, self.lookback_s, self.statement_timeout_s = url, lookback_s, statement_timeout_s
        self._pool: ProcessPoolExecutor | None = None

    def run_once(self, now: datetime | None = None) -> int:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(
                _round, self.url, self.statement_timeout_s, self.lookback_s, now
            ).result()
        except BrokenProcessPool:
            log.warning("the rollup process died; a new one starts next round")
            self._pool = None
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
