"""What every stage is handed: the run, its spec, the registry and where to record progress."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.config import Settings, corral_home
from corral.errors import CorralError
from corral.pipeline.runs import PipelineRun, RunStore
from corral.pipeline.spec import PipelineSpec
from corral.registry import Registry


class GateRejected(CorralError):  # noqa: N818 - a verdict, not a fault: the run ends "rejected"
    """The candidate did not pass a gate (or the canary rolled it back): the run stops there, by design."""

    exit_code = 1

    def __init__(self, message: str, output: dict[str, Any]) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class StageContext:
    run: PipelineRun  # as stored when the stage began: earlier stages' outputs are its inputs
    spec: PipelineSpec
    registry: Registry
    runs: RunStore
    settings: Settings
    config_path: str | None = None
    say: Callable[[str], None] = print
    sleep: Callable[[float], None] | None = None  # the canary's and the drain's waits (tests shorten them)

    @property
    def work_dir(self) -> Path:
        """Files of this run (the training spec, logs); the store keeps everything else."""
        path = corral_home() / "pipelines" / self.run.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def file_dir(self) -> Path:
        return Path(self.run.file).resolve().parent

    def output(self, stage: str) -> dict[str, Any]:
        return self.run.output(stage)

    def rng(self, purpose: str) -> random.Random:
        """Random choices that come out the same when the run resumes."""
        return random.Random(f"{self.run.id}:{purpose}")
