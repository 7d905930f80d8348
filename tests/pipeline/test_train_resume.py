"""Killing the training of a run and resuming it: the loop continues from its checkpoint, one dataset version."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from corral.config import corral_home, load_settings
from corral.errors import CorralError
from corral.pipeline import STAGES, PipelineRunner, RunStore
from corral.pipeline import runner as runner_module
from corral.store.models import FeedbackRow, TraceRow

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs the train extra"),
]


def _kill_training_after_a_checkpoint(stop: threading.Event) -> None:
    """SIGKILL the `corral train` child once it has written a checkpoint (as a crash or an OOM kill would)."""
    while not stop.is_set():
        if list((corral_home() / "runs").glob("starter-*/latest-checkpoint.json")):
            for proc in Path("/proc").iterdir():
                try:  # only this test's own child: the runner starts `corral train` directly
                    parent = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                    cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                except (OSError, ValueError, IndexError):
                    continue
                if parent == os.getpid() and b"train" in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)
                    return
        time.sleep(0.05)


def test_a_run_killed_in_training_resumes_from_the_checkpoint_without_a_second_dataset(
    sqlite_url, tmp_path, monkeypatch
):
    from corral.registry import open_registry
    from corral.train.starter import NEW_FILE, ensure_starter_model, rows

    monkeypatch.setenv("CORRAL_DATABASE_URL", sqlite_url)
    registry = open_registry()
    ensure_starter_model(registry)
    now = datetime.now(UTC)
    with registry.store.session() as s:
        for n, row in enumerate(rows(NEW_FILE, split="train")[:24]):
            at, trace = now - timedelta(minutes=n), f"{n:032x}"
            s.add(
                TraceRow(
                    id=trace, at=at, day=at.strftime("%Y-%m-%d"), deployment="support", endpoint="chat",
                    model_version="starter@1", status=200, request={"messages": row["messages"][:1]},
                    response={"choices": [{"message": {"role": "assistant", "content": "I cannot help."}}]},
                )
            )  # fmt: skip
            s.add(
                FeedbackRow(
                    id=f"f{n:031x}", trace_id=trace, score=0.0, correction=row["messages"][-1]["content"]
                )
            )
    spec = {
        "name": "refresh",
        "model": "starter",
        "deployment": "support",
        "collect": {"window": "1d"},
        "dataset": {"name": "support-refresh", "replay": 0.5},
        "train": {
            "method": "full", "max_steps": 40, "batch_size": 4, "max_seq_len": 64, "warmup_steps": 0,
            "checkpoint_every": 2, "eval_every": 40,
        },
        "evaluate": {"gates": ["gate.yaml"]},
    }  # fmt: skip
    (tmp_path / "refresh.yaml").write_text(yaml.safe_dump(spec))
    fakes: dict[str, Any] = dict(runner_module.STAGE_FUNCTIONS)
    fakes.update({name: (lambda ctx, name=name: {"ok": name}) for name in STAGES[3:]})
    monkeypatch.setattr(runner_module, "STAGE_FUNCTIONS", fakes)
    runner = PipelineRunner(registry, load_settings(environ={}), say=lambda _t: None)

    stop = threading.Event()
    killer = threading.Thread(target=_kill_training_after_a_checkpoint, args=(stop,), daemon=True)
    killer.start()
    try:
        with pytest.raises(CorralError, match="training failed"):
            runner.run(tmp_path / "refresh.yaml")
    finally:
        stop.set()
        killer.join(5)
    [run] = RunStore(registry.store).list()
    assert RunStore(registry.store).get(run.id).stage("train").status == "failed"  # type: ignore[union-attr]

    resumed = runner.resume(run.id)
    trained = resumed.output("train")
    assert resumed.status == "succeeded" and trained["version"] == "starter@2"
    assert trained["resumed_from_step"] >= 2  # the loop's checkpoint, not step 0
    assert [v.version for v in registry.datasets.versions("support-refresh")] == [1]
    assert [v.version for v in registry.models.versions("starter")] == [1, 2]
