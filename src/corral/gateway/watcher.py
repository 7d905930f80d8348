"""The store watcher: a thread that notices new keys, deployment changes, alias moves and retirements."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from corral.gateway.costs import month_spend
from corral.store.models import ModelRow, ModelVersionRow

if TYPE_CHECKING:
    from corral.gateway.auth import KeyRing
    from corral.gateway.limits import Limiter
    from corral.gateway.routes import RouteTable
    from corral.registry.models import ModelRegistry
    from corral.store import Store

log = logging.getLogger("corral.gateway.watcher")
SPEND_EVERY = 5  # polls between budget refreshes


class StoreWatcher:
    """Polls cheap signatures (max ids, counts) every `interval_s`; rebuilds what changed.

    An alias move or rollback therefore reaches the routes within one interval, with no restart.
    """

    def __init__(
        self,
        keys: KeyRing,
        routes: RouteTable,
        limiter: Limiter,
        store: Store,
        models: ModelRegistry | None,
        interval_s: float,
    ) -> None:
        self.keys, self.routes, self.limiter = keys, routes, limiter
        self.store, self.models = store, models
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._polls = 0
        self._failing = False
        self.on_change: list[Callable[[], None]] = []

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-store-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
                if self._failing:
                    log.warning("store reachable again; routes and keys are current")
                self._failing = False
            except Exception as exc:  # noqa: BLE001 - keep serving with what we have
                if not self._failing:
                    log.error("cannot poll the store (%s); serving with the last known routes and keys", exc)
                self._failing = True

    def poll(self) -> None:
        """Runs on the watcher thread and from admin changes; the route table locks its own rebuild."""
        self.keys.refresh()
        self._refresh_routes()
        if self._polls % SPEND_EVERY == 0:
            self.limiter.set_spend(month_spend(self.store))
        self._polls += 1
        if self.models is not None and self._complete_retirements(self.models):
            self._refresh_routes()  # a route's reason says "retired" now, not a poll later

    def _refresh_routes(self) -> None:
        if self.routes.refresh():
            for callback in self.on_change:
                callback()

    def _complete_retirements(self, models: ModelRegistry) -> bool:
        """Versions draining with nothing in flight here, nor on any live replica, become retired."""
        with self.store.session() as session:
            rows = session.execute(
                select(ModelRow.name, ModelVersionRow.version)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .where(ModelVersionRow.lifecycle == "draining")
            ).all()
        retired = False
        for name, number in rows:
            ref = f"{name}@{number}"
            if self.routes.in_flight.get(ref) == 0:
                done = models.complete_retirement(ref)
                if done.stage == "retired":
                    retired = True
                    log.info("%s drained; retired%s", ref, " and purged" if done.artifact_purged else "")
        return retired
