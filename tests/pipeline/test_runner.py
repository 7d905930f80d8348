"""The runner: stages in order and recorded, a resume starts where the run stopped, one run at a time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.config import load_settings
from corral.errors import ConflictError, CorralError, InvalidInputError
from corral.pipeline import STAGES, PipelineLock, PipelineRunner, RunStore
from corral.pipeline import runner as runner_module
from corral.pipeline.context import GateRejected, StageContext
from corral.store.lease import Lease

SPEC = {
    "name": "refresh",
    "model": "starter",
    "deployment": "support",
    "dataset": {"name": "support-refresh"},
    "evaluate": {"gates": ["gate.yaml"]},
}


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "refresh.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


class FakeStages:
    """Stand-ins for the stages that record what ran, and fail or reject where told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ran: list[str] = []
        self.fail_at: str | None = None
        self.reject_at: str | None = None
        self.seen: dict[str, dict[str, Any]] = {}
        fakes = {name: self._stage(name) for name in STAGES}
        monkeypatch.setattr(runner_module, "STAGE_FUNCTIONS", fakes)

    def _stage(self, name: str) -> Any:
        def run(ctx: StageContext) -> dict[str, Any]:
            self.ran.append(name)
            self.seen[name] = {s.name: s.output for s in ctx.run.stages}
            if name == self.fail_at:
                raise CorralError(f"{name} broke")
            if name == self.reject_at:
                raise GateRejected(f"{name} said no", {"passed": False})
            return {"made": f"{name}-output"}

        return run


def _runner(registry: Any) -> PipelineRunner:
    return PipelineRunner(registry, load_settings(environ={}), say=lambda _text: None)


def test_a_run_runs_every_stage_in_order_and_records_output_duration_and_trigger(
    registry, pipeline_file, monkeypatch
):
    stages = FakeStages(monkeypatch)
    run = _runner(registry).run(pipeline_file, trigger="alert:17")
    assert stages.ran == list(STAGES)
    assert run.status == "succeeded" and run.trigger == "alert:17" and run.pipeline == "refresh"
    assert [s.name for s in run.stages] == list(STAGES)
    assert all(s.status == "done" and s.duration_s is not None and s.output for s in run.stages)
    assert stages.seen["dataset"]["collect"] == {"made": "collect-output"}  # a stage sees earlier outputs
    assert run.stage("collect").inputs["spec"]["deployment"] == "support"  # type: ignore[union-attr]
    assert RunStore(registry.store).list()[0].trigger == "alert:17"


@pytest.mark.parametrize("trigger", ["cron", "alert", "alert:", "manual:x"])
def test_an_unknown_trigger_is_refused(registry, pipeline_file, trigger):
    with pytest.raises(InvalidInputError, match="manual, schedule, alert:ID"):
        _runner(registry).run(pipeline_file, trigger=trigger)


def test_a_failed_run_resumes_at_the_stage_that_failed_and_never_repeats_finished_ones(
    registry, pipeline_file, monkeypatch
):
    stages = FakeStages(monkeypatch)
    stages.fail_at = "train"
    with pytest.raises(CorralError, match="train broke"):
        _runner(registry).run(pipeline_file)
    [run] = RunStore(registry.store).list()
    run = RunStore(registry.store).get(run.id)
    assert run.status == "failed" and run.error == "train: train broke"
    assert [(s.name, s.status) for s in run.stages] == [
        ("collect", "done"),
        ("dataset", "done"),
        ("train", "failed"),
    ]
    stages.ran.clear()
    stages.fail_at = None
    resumed = _runner(registry).resume(run.id[:8])
    assert stages.ran == list(STAGES[2:])
    assert resumed.status == "succeeded" and resumed.stage("train").attempts == 2  # type: ignore[union-attr]
    stages.ran.clear()
    assert _runner(registry).resume(run.id).status == "succeeded" and stages.ran == []


def test_a_rejection_ends_the_run_and_skips_the_rest(registry, pipeline_file, monkeypatch):
    stages = FakeStages(monkeypatch)
    stages.reject_at = "evaluate"
    run = _runner(registry).run(pipeline_file)
    assert run.status == "rejected" and "evaluate said no" in (run.error or "")
    statuses = {s.name: s.status for s in run.stages}
    assert statuses["evaluate"] == "rejected" and run.output("evaluate") == {"passed": False}
    assert all(statuses[name] == "skipped" for name in STAGES[4:])
    assert stages.ran == list(STAGES[:4])


def test_two_runs_of_one_pipeline_never_overlap(registry, pipeline_file, monkeypatch):
    FakeStages(monkeypatch)
    other = Lease(registry.store, "pipeline:refresh", ttl_s=60, holder="elsewhere:1:ab")
    assert other.acquire()
    with pytest.raises(
        ConflictError, match="pipeline 'refresh' is already running \\(held by elsewhere:1:ab\\)"
    ):
        _runner(registry).run(pipeline_file)
    assert RunStore(registry.store).list() == []  # refused before any run was recorded
    other.release()
    assert _runner(registry).run(pipeline_file).status == "succeeded"
    assert Lease(registry.store, "pipeline:refresh").holder_now() is None  # released at the end


def test_the_lock_of_a_killed_run_on_this_host_is_freed_at_once(registry):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    killed = Lease(registry.store, "pipeline:refresh", ttl_s=600, holder=f"{socket.gethostname()}:{pid}:00")
    assert killed.acquire()
    with PipelineLock(registry, "refresh") as lock:
        assert lock.lease.holder_now() == lock.lease.holder
    alive = Lease(
        registry.store, "pipeline:refresh", ttl_s=600, holder=f"{socket.gethostname()}:{os.getpid()}:00"
    )
    assert alive.acquire()
    with pytest.raises(ConflictError), PipelineLock(registry, "refresh"):
        pass


def test_the_cli_runs_lists_shows_and_resumes(pipeline_file, monkeypatch, capsys, sqlite_url):
    from corral.cli.main import main

    monkeypatch.setenv("CORRAL_DATABASE_URL", sqlite_url)
    stages = FakeStages(monkeypatch)
    stages.fail_at = "canary"

    def cli(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return int(info.value.code or 0), out, err

    code, out, err = cli("pipeline", "run", str(pipeline_file), "--trigger", "schedule")
    assert code == 1 and "error: canary broke" in err and "Traceback" not in err
    code, out, _ = cli("pipeline", "list")
    assert code == 0 and "schedule" in out and "failed" in out
    code, out, _ = cli("pipeline", "status", "--json")
    import json

    shown = json.loads(out)
    assert shown["status"] == "failed" and [s["status"] for s in shown["stages"]][-1] == "failed"
    stages.fail_at = None
    code, out, err = cli("pipeline", "resume", shown["id"], "--json")
    assert (
        code == 0 and json.loads(out)["status"] == "succeeded" and "resuming run" in err
    )  # narration: stderr
    code, out, _ = cli("pipeline", "status", shown["id"][:8])
    assert code == 0 and "retire" in out and "done" in out
    code, _, err = cli("pipeline", "status", "feedface")
    assert code != 0 and "no pipeline run 'feedface'" in err
    stages.reject_at = "evaluate"
    code, out, _ = cli("pipeline", "run", str(pipeline_file))
    assert code == 1 and "rejected" in out
    code, _, err = cli("pipeline", "run", str(pipeline_file.parent / "missing.yaml"))
    assert code != 0 and "missing.yaml does not exist" in err
