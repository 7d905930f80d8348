"""Crash safety and scale-out: kill -9 then --resume gives the same weights; 2-process DDP matches one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

from corral.train import parse_spec, train
from corral.train.checkpoint import read_pointer
from corral.train.loop import run_dir_for

# Runs a spec in a fresh interpreter and SIGKILLs itself at a chosen moment.
KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from corral.artifacts import ArtifactStore
    from corral.train import load_spec, train
    spec_path, moment = sys.argv[1], sys.argv[2]
    if moment == "during-checkpoint-6":  # die half way through storing the step-6 checkpoint
        real = ArtifactStore.put_file
        def put_file(self, path):
            if "staging-6" in str(path):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, path)
        ArtifactStore.put_file = put_file
    def on_step(step, metrics):
        if moment == "after-step-7" and step == 7:
            os.kill(os.getpid(), signal.SIGKILL)
    train(load_spec(spec_path), progress=False, on_step=on_step)
    """
)


def weights(registry, ref: str) -> dict:
    from safetensors.torch import load_file

    return load_file(registry.models.materialize(registry.models.resolve(ref)) / "model.safetensors")


@pytest.mark.parametrize(("moment", "resumed_at"), [("after-step-7", 6), ("during-checkpoint-6", 3)])
def test_resume_after_kill_9_ends_with_the_same_weights_as_an_uninterrupted_run(
    spec_data, setup, tmp_path, moment, resumed_at
):
    data = spec_data(
        setup, method="full", max_steps=10, checkpoint_every=3, eval_every=5, dropout=0.1, lr=3e-3
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    killed = subprocess.run([sys.executable, "-c", KILLER, str(path), moment], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    spec = parse_spec(data)
    assert read_pointer(run_dir_for(spec))["step"] == resumed_at
    with pytest.raises(Exception, match="no version|does not exist"):
        setup.registry.models.resolve("tuned")

    resumed = train(spec, setup.registry, resume=True, progress=False)
    assert resumed.resumed_from == resumed_at and resumed.version.ref == "tuned@1"
    straight = train(spec, setup.registry, progress=False)
    # bit-identical files: register answers with the resumed run's version instead of making tuned@2
    assert straight.resumed_from == 0 and straight.version.ref == "tuned@1" and not straight.version.created
    assert weights(setup.registry, "tuned@1")


@pytest.mark.slow
def test_two_process_ddp_on_cpu_matches_one_process_with_the_same_global_batch(spec_data, setup, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun is installed with torch"
    common = {"method": "full", "max_steps": 3, "checkpoint_every": 2, "eval_every": 3, "lr": 3e-3}
    ddp_spec = spec_data(setup, output="ddp", batch_size=4, grad_accum=2, **common)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(ddp_spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "corral.cli.main",
        "train",
        str(path),
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [v.ref for v in setup.registry.models.versions("ddp")] == ["ddp@1"]  # rank 0 alone registers

    single = parse_spec(spec_data(setup, output="single", batch_size=16, grad_accum=1, **common))
    train(single, setup.registry, progress=False)
    a, b = weights(setup.registry, "ddp@1"), weights(setup.registry, "single@1")
    assert all(a[k].allclose(b[k], atol=2e-5) for k in a)
