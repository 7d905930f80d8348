"""The model stages: train the candidate (in a child process, under torchrun for nproc > 1), gate it
against production with the gate files, and register it as `staging`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from corral.errors import CorralError
from corral.pipeline.context import GateRejected, StageContext
from corral.pipeline.spec import gate_paths

STAGING = "staging"


def train_spec(ctx: StageContext) -> dict[str, Any]:
    """The `corral train` spec for this run: the same spec on a resume, so its checkpoints are found."""
    return {
        **ctx.spec.train.spec_keys(),
        "output": ctx.spec.model,
        "base": ctx.output("collect")["production"],
        "dataset": ctx.output("dataset")["dataset"],
        "tags": {**dict(ctx.spec.train.spec_keys().get("tags") or {}), "pipeline_run": ctx.run.id},
        "description": f"refresh {ctx.spec.name} run {ctx.run.id[:8]}",
    }


def trained_by_run(ctx: StageContext) -> Any:
    """The version this run already registered (a run killed after training, before recording it)."""
    for version in reversed(ctx.registry.models.versions(ctx.spec.model)):
        if version.tags.get("pipeline_run") == ctx.run.id:
            return version
    return None


def train_command(spec_file: Path, nproc: int) -> list[str]:
    cli = ["-m", "corral.cli.main", "train", str(spec_file), "--resume", "--json", "--no-progress"]
    if nproc > 1:  # the same loop, one process per rank (DDP)
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            *cli,
        ]
    return [sys.executable, *cli]


def _checkpoint_step(spec: dict[str, Any]) -> int:
    """The step the training loop will resume from (0: none), read from its checkpoint pointer."""
    from corral.train.loop import run_dir_for
    from corral.train.spec import parse_spec

    pointer = run_dir_for(parse_spec(spec)) / "latest-checkpoint.json"
    try:
        return int(json.loads(pointer.read_text()).get("step", 0))
    except (OSError, ValueError):
        return 0


def train(ctx: StageContext) -> dict[str, Any]:
    existing = trained_by_run(ctx)
    if existing is not None:
        return {
            "version": existing.ref,
            "number": existing.version,
            "metrics": existing.metrics,
            "reused": True,
        }
    spec = train_spec(ctx)
    spec_file = ctx.work_dir / "train.yaml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    resume_step = _checkpoint_step(spec)
    ctx.runs.update_output(ctx.run.id, "train", {"spec": str(spec_file), "resumed_from_step": resume_step})
    command = train_command(spec_file, ctx.spec.train.nproc)
    env = dict(os.environ)
    if ctx.config_path:
        env["CORRAL_CONFIG"] = str(Path(ctx.config_path).resolve())
    log = ctx.work_dir / "train.log"
    note = f" (resuming at step {resume_step})" if resume_step else ""
    ctx.say(f"training {spec['output']} from {spec['base']} on {spec['dataset']}{note}; log {log}")
    with open(log, "ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, env=env, check=False)  # noqa: S603
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise CorralError(
            f"training failed (exit {done.returncode}): {' | '.join(tail) or 'no output'}",
            hint=f"see {log}; `corral pipeline resume {ctx.run.id[:8]}` continues from the last checkpoint",
        )
    version = json.loads(done.stdout.decode())
    return {
        "version": f"{version['name']}@{version['version']}",
        "number": version["version"],
        "metrics": version.get("metrics", {}),
        "spec": str(spec_file),
        "resumed_from_step": resume_step,
        "nproc": ctx.spec.train.nproc,
    }


def _gate_result(path: Path, outcome: Any) -> dict[str, Any]:
    comparison = outcome.comparison
    return {
        "gate": str(path),
        "passed": outcome.passed,
        "dataset": outcome.gate.dataset,
        "run": outcome.candidate.id,
        "baseline_run": comparison.baseline.id if comparison is not None else None,
        "rules": [
            {
                "rule": r.rule.text,
                "candidate": r.candidate,
                "baseline": r.baseline,
                "passed": r.passed,
                "reason": r.reason,
            }
            for r in outcome.verdict.results
        ],
    }


def evaluate(ctx: StageContext) -> dict[str, Any]:
    from corral.evaluate import RunOptions, gate, kept_workers, load_gate

    candidate = ctx.output("train")["version"]
    gates = [(path, load_gate(path)) for path in gate_paths(ctx.spec, ctx.run.file)]  # all checked first
    options = RunOptions(
        limit=ctx.spec.evaluate.limit,
        max_tokens=ctx.spec.evaluate.max_tokens,
        progress=False,
        config_path=ctx.config_path,
    )
    results = []
    with kept_workers():
        for path, spec in gates:
            outcome = gate(candidate, spec, registry=ctx.registry, options=options)
            results.append(_gate_result(path, outcome))
            ctx.say(f"gate {path.name}: {'passed' if outcome.passed else 'failed'}")
    output = {"candidate": candidate, "gates": results, "passed": all(r["passed"] for r in results)}
    if not output["passed"]:
        failed = [
            f"{Path(r['gate']).name}: {rule['reason']}"
            for r in results
            for rule in r["rules"]
            if not rule["passed"]
        ]
        raise GateRejected(f"{candidate} failed its gates ({'; '.join(failed)})", output)
    return output


def register(ctx: StageContext) -> dict[str, Any]:
    trained = ctx.output("train")
    version = ctx.registry.models.set_alias(
        ctx.spec.model,
        STAGING,
        trained["number"],
        reason=f"pipeline {ctx.spec.name} run {ctx.run.id[:8]}: gates passed",
    )
    ctx.say(f"{version.ref} is {STAGING}")
    return {"staging": version.ref, "number": version.version}
