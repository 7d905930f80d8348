"""Running a pipeline: its stages in order, each recorded; a resume starts at the first unfinished one.

Two runs of one pipeline never overlap: a run holds the lease `pipeline:NAME` in the store (renewed
while it runs), so a second `corral pipeline run`, on any machine, is refused while the first lives.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete

from corral.config import Settings
from corral.errors import ConflictError, CorralError, InvalidInputError
from corral.pipeline import collect, rollout, training
from corral.pipeline.context import GateRejected, StageContext
from corral.pipeline.runs import DONE, FAILED, REJECTED, RUNNING, SKIPPED, SUCCEEDED, PipelineRun, RunStore
from corral.pipeline.spec import STAGES, PipelineSpec, load_pipeline, parse_pipeline
from corral.registry import Registry
from corral.store.lease import Lease
from corral.store.models import LeaseRow

Stage = Callable[[StageContext], dict[str, Any]]
STAGE_FUNCTIONS: dict[str, Stage] = {
    "collect": collect.collect,
    "dataset": collect.dataset,
    "train": training.train,
    "evaluate": training.evaluate,
    "register": training.register,
    "canary": rollout.canary,
    "promote": rollout.promote,
    "retire": rollout.retire,
}
TRIGGER_KINDS = ("manual", "schedule", "alert")
LEASE_TTL_S = 60.0
assert tuple(STAGE_FUNCTIONS) == STAGES


def check_trigger(trigger: str) -> str:
    kind, _, ident = trigger.partition(":")
    if kind not in TRIGGER_KINDS or (kind == "alert") != bool(ident):
        raise InvalidInputError(
            f"--trigger '{trigger}' is not one of manual, schedule, alert:ID",
            hint="alert:ID names the alert event that started the run",
        )
    return trigger


def _stage_inputs(name: str, spec: PipelineSpec, run: PipelineRun) -> dict[str, Any]:
    """What a stage starts from: its part of the pipeline file and the references earlier stages made."""
    section: Any = getattr(spec, name, None)
    inputs: dict[str, Any] = {
        "spec": section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    }
    refs = {
        "dataset": ("collect", "rows_artifact"),
        "train": ("dataset", "dataset"),
        "evaluate": ("train", "version"),
        "register": ("train", "version"),
        "canary": ("register", "staging"),
        "promote": ("canary", "outcome"),
        "retire": ("collect", "production"),
    }
    if name in refs:
        stage, key = refs[name]
        inputs[f"{stage}.{key}"] = run.output(stage).get(key)
    if name == "collect":
        inputs["spec"] = {"deployment": spec.deployment, **(inputs["spec"] or {})}
    return {k: v for k, v in inputs.items() if v is not None}


class PipelineLock:
    """The lease `pipeline:NAME`, renewed on a thread while held; a dead holder on this host frees it."""

    def __init__(self, registry: Registry, name: str, ttl_s: float = LEASE_TTL_S) -> None:
        self.lease = Lease(registry.store, f"pipeline:{name}", ttl_s=ttl_s)
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PipelineLock:
        if not self.lease.acquire() and not (self._take_from_dead_holder() and self.lease.acquire()):
            raise ConflictError(
                f"pipeline '{self.name}' is already running (held by {self.lease.holder_now()})",
                hint="wait for it, or see `corral pipeline list`; a killed run frees the lock when its lease expires",
            )
        self._thread = threading.Thread(target=self._renew, name="corral-pipeline-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.lease.release()

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.ttl.total_seconds() / 3):
            with contextlib.suppress(CorralError):  # the store is down a moment: next round retries
                self.lease.acquire()

    def _take_from_dead_holder(self) -> bool:
        """A holder that was this host's process, now gone (killed), cannot be running the pipeline."""
        holder = self.lease.holder_now()
        host, _, rest = (holder or "").partition(":")
        pid = rest.partition(":")[0]
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
            return False
        except ProcessLookupError:
            pass
        except PermissionError:
            return False
        with self.lease.store.session() as session:
            session.execute(
                delete(LeaseRow).where(LeaseRow.name == self.lease.name, LeaseRow.holder == holder)
            )
        return True


class PipelineRunner:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        *,
        config_path: str | None = None,
        say: Callable[[str], None] = print,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.runs = RunStore(registry.store)
        self.config_path = config_path
        self.say = say
        self.sleep = sleep

    def run(self, file: str | Path, trigger: str = "manual") -> PipelineRun:
        """A new run of the pipeline file, to the end (or to a rejection)."""
        check_trigger(trigger)
        spec = load_pipeline(file)
        with PipelineLock(self.registry, spec.name):
            run = self.runs.create(
                spec.name, str(Path(file).resolve()), spec.model_dump(mode="json"), trigger
            )
            self.say(f"pipeline {spec.name}: run {run.id} (trigger {trigger})")
            return self._execute(run.id, spec)

    def resume(self, run_id: str) -> PipelineRun:
        """Continue a failed or killed run at its first unfinished stage; finished stages are not repeated."""
        run = self.runs.get(run_id)
        if run.status in (SUCCEEDED, REJECTED):
            self.say(f"run {run.id} already finished: {run.status}; nothing to resume")
            return run
        spec = parse_pipeline(run.spec, f"run {run.id[:8]}")  # the spec the run began with
        with PipelineLock(self.registry, spec.name):
            run = self.runs.get(run.id)  # a live run that held the lock may have finished meanwhile
            if run.status in (SUCCEEDED, REJECTED):
                return run
            self.say(f"pipeline {spec.name}: resuming run {run.id}")
            return self._execute(run.id, spec)

    def _execute(self, run_id: str, spec: PipelineSpec) -> PipelineRun:
        self.runs.set_status(run_id, RUNNING)
        for position, name in enumerate(STAGES):
            run = self.runs.get(run_id)
            done = run.stage(name)
            if done is not None and done.finished:
                continue
            self.runs.begin_stage(run_id, name, position, _stage_inputs(name, spec, run))
            ctx = StageContext(
                self.runs.get(run_id), spec, self.registry, self.runs, self.settings,
                self.config_path, self.say, self.sleep,
            )  # fmt: skip
            try:
                output = STAGE_FUNCTIONS[name](ctx)
            except GateRejected as exc:
                self.runs.finish_stage(run_id, name, REJECTED, exc.output, exc.message)
                for later in STAGES[position + 1 :]:
                    self.runs.begin_stage(run_id, later, STAGES.index(later), {})
                    self.runs.finish_stage(run_id, later, SKIPPED)
                self.runs.set_status(run_id, REJECTED, exc.message)
                self.say(f"run {run_id[:8]} rejected at {name}: {exc.message}")
                return self.runs.get(run_id)
            except BaseException as exc:  # recorded, then raised: the CLI prints it, `resume` retries it
                message = exc.message if isinstance(exc, CorralError) else f"{type(exc).__name__}: {exc}"
                self.runs.finish_stage(run_id, name, FAILED, None, message)
                self.runs.set_status(run_id, FAILED, f"{name}: {message}")
                raise
            self.runs.finish_stage(run_id, name, DONE, output)
        self.runs.set_status(run_id, SUCCEEDED)
        self.say(f"run {run_id[:8]} succeeded")
        return self.runs.get(run_id)
