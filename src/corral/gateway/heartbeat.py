"""This replica's heartbeat: a row with its in-flight count per model version, written off the request path."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete

from corral.store import Store
from corral.store.models import GatewayHeartbeatRow, utcnow

log = logging.getLogger("corral.gateway.heartbeat")
MIN_TTL_S = 5.0  # a heartbeat counts this long at least; a replica that stops beating is gone after it
PRUNE_AFTER = timedelta(hours=1)  # rows of replicas that died without saying so


class Heartbeat:
    """Every `interval_s`, store `counts()` (version ref → requests in flight) under this replica's id.

    Other processes (`corral models retire`, other replicas) read these rows to decide when a
    draining version has nothing in flight anywhere. `stop()` removes the row: a replica that
    shut down is not waited for.
    """

    def __init__(self, store: Store, counts: Callable[[], dict[str, int]], interval_s: float) -> None:
        self.store = store
        self.counts = counts
        self.interval_s = interval_s
        self.ttl = timedelta(seconds=max(5 * interval_s, MIN_TTL_S))
        self.replica = os.urandom(8).hex()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        """Write this replica's row now (one upsert)."""
        now = utcnow()
        counts = {ref: n for ref, n in dict(self.counts()).items() if n > 0}
        row = GatewayHeartbeatRow(
            replica=self.replica,
            host=socket.gethostname()[:256],
            pid=os.getpid(),
            in_flight=counts,
            at=now,
            expires_at=now + self.ttl,
        )
        with self.store.session() as session:
            session.merge(row)

    def start(self) -> None:
        with self.store.session() as session:
            session.execute(
                delete(GatewayHeartbeatRow).where(GatewayHeartbeatRow.expires_at < utcnow() - PRUNE_AFTER)
            )
        self.beat()
        self._thread = threading.Thread(target=self._run, name="corral-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            with self.store.session() as session:
                session.execute(
                    delete(GatewayHeartbeatRow).where(GatewayHeartbeatRow.replica == self.replica)
                )
        except Exception as exc:  # noqa: BLE001 - the row expires on its own
            log.warning("could not remove this replica's heartbeat (%s); it expires in %s", exc, self.ttl)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - keep beating; draining versions wait meanwhile
                if not self._failing:
                    log.error("cannot write the gateway heartbeat (%s); draining versions wait for it", exc)
                self._failing = True
