"""Local engine workers as child processes: started on demand, health-checked, restarted with backoff."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config import Settings, corral_home

log = logging.getLogger("corral.gateway.workers")
MAX_BACKOFF_S = 30.0


def free_port(start: int, taken: set[int]) -> int:
    """The first port from `start` that nothing listens on and no other worker of ours was given."""
    port = start
    while True:
        if port not in taken:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    pass
        port += 1


@dataclass
class WorkerProcess:
    ref: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff_s: float = 1.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


class WorkerSupervisor:
    """Keeps one group of workers per registry version that a route needs, and stops the rest when idle."""

    def __init__(
        self,
        settings: Settings,
        *,
        in_flight: Callable[[str], int] = lambda ref: 0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.in_flight = in_flight
        self.on_restart = on_restart
        self._groups: dict[str, list[WorkerProcess]] = {}
        self._wanted: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log_dir = corral_home() / "logs"

    # -- the WorkerDirectory protocol the route resolver uses ------------------------------------------
    def ensure(self, version: Any, replicas: int) -> list[str] | None:
        ref = version.ref
        with self._lock:
            self._wanted.add(ref)
            group = self._groups.get(ref)
            if group is None:
                taken = {w.port for g in self._groups.values() for w in g}
                group = []
                for _ in range(replicas):
                    port = free_port(self.settings.engine.worker_port_start, taken)
                    taken.add(port)
                    group.append(WorkerProcess(ref, port))
                self._groups[ref] = group
                for worker in group:
                    self._spawn(worker)
            ready = [w.url for w in group if w.ready]
            return ready or None

    def retain(self, refs: set[str]) -> None:
        with self._lock:
            self._wanted = set(refs)

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "ref": w.ref,
                    "url": w.url,
                    "ready": w.ready,
                    "restarts": w.restarts,
                    "pid": w.process.pid if w.process else None,
                }
                for g in self._groups.values()
                for w in g
            ]

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-worker-supervisor", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            workers = [w for g in self._groups.values() for w in g]
            self._groups = {}
        for worker in workers:
            self._terminate(worker, grace_s)

    # -- internals --------------------------------------------------------------------------------------
    def _command(self, worker: WorkerProcess) -> list[str]:
        values = {
            "python": sys.executable,
            "ref": worker.ref,
            "port": str(worker.port),
            "config": self.settings.source or "",
        }
        return [part.format(**values) for part in self.settings.gateway.worker_command]

    def _spawn(self, worker: WorkerProcess) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"worker-{worker.ref.replace('@', '-')}-{worker.port}.log"
        env = dict(os.environ)
        if self.settings.source:
            env["CORRAL_CONFIG"] = str(Path(self.settings.source).resolve())
        with open(log_file, "ab") as out:
            worker.process = subprocess.Popen(  # noqa: S603 - the command comes from the operator's config
                self._command(worker), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        worker.ready, worker.started_at = False, time.monotonic()
        log.info(
            "started worker for %s on port %d (pid %d, log %s)",
            worker.ref,
            worker.port,
            worker.process.pid,
            log_file,
        )

    def _run(self) -> None:
        interval = self.settings.gateway.worker_health_interval_s
        while not self._stop.wait(interval):
            with self._lock:
                groups = dict(self._groups)
            for ref, group in groups.items():
                if ref not in self._wanted and self.in_flight(ref) == 0:
                    self._retire_group(ref)
                    continue
                for worker in group:
                    self._check(worker)

    def _check(self, worker: WorkerProcess) -> None:
        now = time.monotonic()
        process = worker.process
        if process is None:
            if now >= worker.next_start:
                self._spawn(worker)
            return
        code = process.poll()
        too_slow = not worker.ready and now - worker.started_at > self.settings.gateway.worker_start_timeout_s
        if code is not None or too_slow:
            reason = f"exited with {code}" if code is not None else "did not become healthy in time"
            if too_slow:
                self._terminate(worker, 5)
            worker.process, worker.ready = None, False
            worker.restarts += 1
            worker.next_start = now + worker.backoff_s
            log.warning(
                "worker %s on port %d %s; restarting in %.0f s",
                worker.ref,
                worker.port,
                reason,
                worker.backoff_s,
            )
            worker.backoff_s = min(MAX_BACKOFF_S, worker.backoff_s * 2)
            if self.on_restart:
                self.on_restart(worker.ref)
            return
        healthy = _healthy(f"http://127.0.0.1:{worker.port}/health")
        if healthy and not worker.ready:
            log.info("worker %s on port %d is ready", worker.ref, worker.port)
            worker.backoff_s = 1.0
        worker.ready = healthy

    def _retire_group(self, ref: str) -> None:
        with self._lock:
            group = self._groups.pop(ref, [])
        for worker in group:
            log.info("stopping worker %s on port %d: no route uses it any more", ref, worker.port)
            self._terminate(worker, 10)

    @staticmethod
    def _terminate(worker: WorkerProcess, grace_s: float) -> None:
        process = worker.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback only
            return bool(response.status == 200)
    except OSError:
        return False
