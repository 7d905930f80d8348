"""What starts runs besides a person: cron schedules and monitoring alerts, watched by `corral serve`.

The gateway never trains: a trigger starts `corral pipeline run FILE --trigger ...` as a separate
process. With several gateway replicas, the one holding the lease `pipeline-runner` starts runs, so a
schedule or an alert starts one run, not one per replica (and the run's own lock refuses a second).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from corral.config import PipelineSettings, corral_home
from corral.errors import CorralError
from corral.pipeline.cron import Cron, parse_cron
from corral.pipeline.spec import PipelineSpec, load_pipeline
from corral.store import Store
from corral.store.lease import Lease

log = logging.getLogger("corral.pipeline")
RUNNER_LEASE = "pipeline-runner"
Spawn = Callable[[Path, str], Any]


def spawn_run(file: Path, trigger: str, config_path: str | None = None) -> subprocess.Popen[bytes]:
    """`corral pipeline run FILE --trigger TRIGGER` in its own process (and session: it outlives a reload)."""
    logs = corral_home() / "pipelines" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    command = [sys.executable, "-m", "corral.cli.main", "pipeline", "run", str(file), "--trigger", trigger]
    if config_path:
        command += ["--config", str(config_path)]
    with open(logs / f"{file.stem}-{stamp}.log", "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603


@dataclass
class Watched:
    file: Path
    spec: PipelineSpec
    cron: Cron | None
    next_at: datetime | None = None


def alert_starts(spec: PipelineSpec, event: dict[str, Any]) -> bool:
    """A firing of one of the rules the pipeline names, on its deployment (or on every deployment)."""
    if event.get("action") != "fire" or event.get("rule") not in spec.triggers.alerts:
        return False
    return event.get("deployment") in (None, "", spec.deployment)


class PipelineScheduler:
    """`tick()` starts the runs that are due; `on_alert` starts those an alert names; both only on the
    replica holding the runner lease."""

    def __init__(
        self,
        store: Store,
        settings: PipelineSettings,
        *,
        base_dir: Path | None = None,
        config_path: str | None = None,
        spawn: Spawn | None = None,
        holder: str | None = None,
        now: datetime | None = None,
    ) -> None:
        self.settings = settings
        self.lease = Lease(store, RUNNER_LEASE, ttl_s=settings.lease_s, holder=holder)
        self.spawn: Spawn = spawn or (lambda file, trigger: spawn_run(file, trigger, config_path))
        base = base_dir or Path.cwd()
        start = now or datetime.now(UTC)
        self.watched: list[Watched] = []
        for name in settings.files:  # every file checked now: a bad one stops `corral serve` at start-up
            file = (base / name).resolve()
            spec = load_pipeline(file, check_train=False)
            cron = parse_cron(spec.schedule) if spec.schedule else None
            self.watched.append(Watched(file, spec, cron, cron.next_after(start) if cron else None))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def tick(self, now: datetime | None = None) -> list[tuple[Path, str]]:
        now = now or datetime.now(UTC)
        if not any(w.cron for w in self.watched) or not self.lease.acquire(now):
            return []
        started = []
        for watched in self.watched:
            if watched.cron and watched.next_at and now >= watched.next_at:
                watched.next_at = watched.cron.next_after(now)
                started.append(self._start(watched, "schedule"))
        return started

    def on_alert(self, event: dict[str, Any]) -> list[tuple[Path, str]]:
        chosen = [w for w in self.watched if alert_starts(w.spec, event)]
        if not chosen or not self.lease.acquire():
            return []
        return [self._start(w, f"alert:{event.get('id')}") for w in chosen]

    def _start(self, watched: Watched, trigger: str) -> tuple[Path, str]:
        log.info("starting pipeline %s (%s): %s", watched.spec.name, trigger, watched.file)
        self.spawn(watched.file, trigger)
        return watched.file, trigger

    def start(self) -> None:
        from corral.monitor.alerts import subscribe

        self._unsubscribe = subscribe(self._alert_safely)
        self._thread = threading.Thread(target=self._loop, name="corral-pipeline-scheduler", daemon=True)
        self._thread.start()

    def _alert_safely(self, event: dict[str, Any]) -> None:
        try:
            self.on_alert(event)
        except (CorralError, OSError):
            log.exception("could not start a pipeline for alert %s", event.get("id"))

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.poll_s):
            try:
                self.tick()
            except (CorralError, OSError):  # the store is down a moment: the next tick retries
                log.exception("pipeline schedule check failed")

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(CorralError):
            self.lease.release()
