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
    served: bool = False  # became healthy since it was (re)started: the start-up timeout no longer applies
    failed_probes: int = 0  # consecutive failed health probes of a worker that had served
    last_error: str | None = None  # why it last exited or was restarted, from its log
    log_file: Path | None = None
    log_offset: int = 0  # where this run's output starts in the (appended) log file
    embeddings: bool = False  # started with --embeddings, because a route asked for them

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
        on_error: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self.in_flight = in_flight
        self.on_restart = on_restart
        self.on_error = on_error  # a version's worker failed (its last error) or serves again (None)
        self._groups: dict[str, list[WorkerProcess]] = {}
        self._wanted: set[str] = set()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log_dir = corral_home() / "logs"

    # -- the WorkerDirectory protocol the route resolver uses ------------------------------------------
    def ensure(self, version: Any, replicas: int, embeddings: bool = False) -> list[str] | None:
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
                    group.append(WorkerProcess(ref, port, embeddings=embeddings))
                self._groups[ref] = group
                for worker in group:
                    self._spawn(worker)
            elif embeddings and not all(w.embeddings for w in group):
                for worker in group:  # a route now wants embeddings: start them again with --embeddings
                    log.info("restarting worker %s on port %d to serve embeddings too", ref, worker.port)
                    worker.embeddings = True
                    self._terminate(worker, 10)
                    self._spawn(worker)
            ready = [w.url for w in group if w.ready]
            return ready or None

    def retain(self, refs: set[str]) -> None:
        with self._lock:
            self._wanted = set(refs)

    def problem(self, ref: str) -> str | None:
        """Why no worker of `ref` serves now (starting, or failing with its last error); None if one does."""
        with self._lock:
            group = self._groups.get(ref) or []
            if not group or any(w.ready for w in group):
                return None
            failing = [w for w in group if w.last_error]
            if failing:
                w = failing[0]
                return f"the worker for {ref} keeps failing ({w.restarts} restart(s)); its last error: {w.last_error}"
            return f"the worker for {ref} is starting"

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "ref": w.ref,
                    "url": w.url,
                    "ready": w.ready,
                    "restarts": w.restarts,
                    "failed_probes": w.failed_probes,
                    "last_error": w.last_error,
                    "log": str(w.log_file) if w.log_file else None,
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
        command = [part.format(**values) for part in self.settings.gateway.worker_command]
        return [*command, "--embeddings"] if worker.embeddings else command

    def _spawn(self, worker: WorkerProcess) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"worker-{worker.ref.replace('@', '-')}-{worker.port}.log"
        env = dict(os.environ)
        if self.settings.source:
            env["CORRAL_CONFIG"] = str(Path(self.settings.source).resolve())
        with open(log_file, "ab") as out:
            worker.log_file, worker.log_offset = log_file, out.tell()
            worker.process = subprocess.Popen(  # noqa: S603 - the command comes from the operator's config
                self._command(worker), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        worker.ready, worker.served, worker.failed_probes = False, False, 0
        worker.started_at = time.monotonic()
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
        if code is not None:
            self._restart(worker, f"exited with {code}", last_output(worker))
            return
        healthy = _healthy(f"http://127.0.0.1:{worker.port}/health")
        g = self.settings.gateway
        verdict = probe_verdict(
            healthy,
            served=worker.served,
            failed_probes=worker.failed_probes,
            age_s=now - worker.started_at,
            start_timeout_s=g.worker_start_timeout_s,
            max_failed_probes=g.worker_failed_probes,
        )
        if verdict == "ready":
            if not worker.ready:
                log.info("worker %s on port %d is ready", worker.ref, worker.port)
            if worker.last_error is not None and self.on_error:
                self.on_error(worker.ref, None)
            worker.ready = worker.served = True
            worker.failed_probes, worker.backoff_s, worker.last_error = 0, 1.0, None
        elif verdict == "failing":
            worker.failed_probes += 1
            log.warning(
                "worker %s on port %d failed health probe %d of %d; it keeps serving meanwhile",
                worker.ref,
                worker.port,
                worker.failed_probes,
                g.worker_failed_probes,
            )
        elif verdict == "unhealthy":
            reason = f"failed {g.worker_failed_probes} health probes in a row"
            self._restart(worker, reason, reason, terminate=True)
        elif verdict == "start_timeout":
            reason = f"did not become healthy within {g.worker_start_timeout_s:.0f} s of starting"
            self._restart(worker, reason, last_output(worker) or reason, terminate=True)

    def _restart(
        self, worker: WorkerProcess, reason: str, error: str | None, terminate: bool = False
    ) -> None:
        if terminate:
            self._terminate(worker, 5)
        worker.process, worker.ready, worker.failed_probes = None, False, 0
        worker.restarts += 1
        worker.last_error = error or reason
        worker.next_start = time.monotonic() + worker.backoff_s
        log.warning(
            "worker %s on port %d %s; restarting in %.0f s (last error: %s)",
            worker.ref,
            worker.port,
            reason,
            worker.backoff_s,
            worker.last_error,
        )
        worker.backoff_s = min(MAX_BACKOFF_S, worker.backoff_s * 2)
        if self.on_restart:
            self.on_restart(worker.ref)
        if self.on_error:
            self.on_error(worker.ref, worker.last_error)

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


def probe_verdict(
    healthy: bool,
    *,
    served: bool,
    failed_probes: int,
    age_s: float,
    start_timeout_s: float,
    max_failed_probes: int,
) -> str:
    """What one health probe means: ready, starting, failing (still serving), unhealthy or start_timeout.

    The start-up timeout applies only until a worker first answers; after that only several failed
    probes in a row restart it, so one slow probe (a worker busy with a huge prompt) never kills it.
    """
    if healthy:
        return "ready"
    if not served:
        return "start_timeout" if age_s > start_timeout_s else "starting"
    return "unhealthy" if failed_probes + 1 >= max_failed_probes else "failing"


def last_output(worker: WorkerProcess, limit: int = 8192) -> str | None:
    """The error a worker's run ended with: the last error-looking line of its log (or the last line)."""
    if worker.log_file is None:
        return None
    try:
        with open(worker.log_file, "rb") as out:
            out.seek(0, os.SEEK_END)
            start = max(worker.log_offset, out.tell() - limit)
            out.seek(start)
            text = out.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    marked = [
        line for line in lines if line.lower().startswith(("error", "corral: error")) or "Error:" in line
    ]
    return (marked or lines)[-1][:500]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback only
            return bool(response.status == 200)
    except OSError:
        return False
