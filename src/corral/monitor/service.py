"""The monitor loop `corral serve` runs: rollups, drift reports and alerts, on one replica at a time."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from corral.config import MonitorSettings
from corral.errors import CorralError
from corral.monitor.alerts import AlertEngine
from corral.monitor.drift import DriftPolicy
from corral.monitor.rollup import RollupJob
from corral.monitor.windows import drift_report
from corral.registry import Registry
from corral.store import Store
from corral.store.lease import Lease
from corral.store.models import DeploymentRow, DriftReportRow

log = logging.getLogger("corral.monitor")
LEASE_NAME = "monitor"


def known_deployments(store: Store) -> list[str]:
    with store.reading() as session:
        return sorted(
            session.scalars(select(DeploymentRow.name).where(DeploymentRow.spec.is_not(None))).all()
        )


class MonitorService:
    """`run_once()` does one round if this replica holds the monitor lease; `start()` loops it on a thread."""

    def __init__(
        self, store: Store, settings: MonitorSettings, *, holder: str | None = None,
        registry: Registry | None = None, rollups: Any = None,
    ) -> None:  # fmt: skip
        self.store = store
        self.settings = settings
        self.registry = registry  # reads the dataset versions of monitor.drift_reference_datasets
        self.lease = Lease(store, LEASE_NAME, ttl_s=max(3 * settings.interval_s, 10.0), holder=holder)
        # `rollups`: anything with RollupJob's run_once; corral serve passes a RollupProcess
        self.rollups = rollups or RollupJob(store, lookback_s=settings.lookback_s)
        self.alerts = AlertEngine(store, settings, lambda: known_deployments(store))

    def run_once(self, now: datetime | None = None) -> dict[str, Any] | None:
        """One round: None when another replica holds the lease."""
        now = now or datetime.now(UTC)
        if not self.lease.acquire(now):
            return None
        rebuilt = self.rollups.run_once(now)
        drifts = self.drift_due(now)
        events = self.alerts.check(now)
        return {"rebuilt_minutes": rebuilt, "drift_reports": drifts, "alerts": events}

    def drift_due(self, now: datetime) -> int:
        """Compute a drift report for each deployment whose last one is older than drift_every_minutes."""
        s = self.settings
        made = 0
        if not s.drift_reports:
            return 0
        for deployment in known_deployments(self.store):
            with self.store.session() as session:
                latest = session.scalar(
                    select(DriftReportRow.at).where(DriftReportRow.deployment == deployment)
                    .order_by(DriftReportRow.id.desc()).limit(1)
                )  # fmt: skip
            if latest is not None and now - latest.replace(tzinfo=UTC) < timedelta(
                minutes=s.drift_every_minutes
            ):
                continue
            current = (now - timedelta(hours=s.drift_window_hours), now)
            reference: tuple[datetime, datetime] | str = s.drift_reference_datasets.get(deployment) or (
                current[0] - timedelta(hours=s.drift_reference_hours),
                current[0],
            )
            try:
                drift_report(self.store, deployment, reference, current, policy=DriftPolicy(alpha=s.drift_alpha),
                             registry=self.registry)  # fmt: skip
            except CorralError as exc:  # e.g. the reference dataset was deleted: the other deployments go on
                log.warning("drift report of %s failed: %s", deployment, exc)
                continue
            made += 1
        return made

    def run_until(self, stop: threading.Event) -> None:
        """Run a round every interval until `stop` is set; then give the lease up."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop outlives a failed round (e.g. the store is down)
                log.exception("monitor round failed; retrying in %.0f s", self.settings.interval_s)
            stop.wait(self.settings.interval_s)
        try:
            self.lease.release()
        except Exception:  # noqa: BLE001 - best effort: the lease expires anyway
            log.debug("could not release the monitor lease", exc_info=True)
