"""Checkpoints in the artifact store, found through a pointer file written only once a checkpoint is complete.

A checkpoint holds the trainable weights, the optimizer state, the step and the RNG states, so a
run resumed after a crash (even `kill -9` during a checkpoint write) continues exactly where the
last complete checkpoint left it. The pointer is replaced atomically after the artifact is stored;
a half-written checkpoint is never pointed at, so it can never be resumed from or registered.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from corral.artifacts import ArtifactStore
from corral.errors import CorralError

POINTER = "latest-checkpoint.json"
# What a write raises on a full disk: OSError from Python, RuntimeError from torch.save (its zip
# writer says "unexpected pos ..."), SafetensorError from safetensors (the weights of save_pretrained).
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, SafetensorError)
NEARLY_FULL = 16 * 2**20  # bytes free under which a failed write is reported as a full disk


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_reason(exc: BaseException, where: Path) -> str:
    """Why a write failed, in words: a full disk says so even when torch or safetensors hide the errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "No space left" in text or "os error 28" in text:
        return "No space left on device"
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return text
    return f"No space left on device ({free:,} bytes free; {text})" if free < NEARLY_FULL else text


def _write_failed(step: int, exc: BaseException, run_dir: Path) -> CorralError:
    return CorralError(
        f"cannot write the checkpoint at step {step}: {write_reason(exc, run_dir)}",
        hint=f"nothing was registered; free space for {run_dir} and the artifact store, then rerun "
        "with --resume to continue from the last checkpoint",
    )


def save_checkpoint(
    run_dir: Path,
    artifacts: ArtifactStore,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> str:
    """Store a checkpoint as an artifact, then point at it; the previous checkpoint is deleted."""
    staging = run_dir / f"staging-{step}"
    previous = read_pointer(run_dir)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        state = {
            "step": step,
            "trainable": _trainable(model),
            "optimizer": optimizer.state_dict(),
            "rng": rng_state(),
        }
        torch.save(state, staging / "state.pt")
        digest = artifacts.put_dir(staging)
        tmp = run_dir / (POINTER + ".tmp")
        tmp.write_text(json.dumps({"step": step, "artifact": digest}))
        os.replace(tmp, run_dir / POINTER)
    except (OSError, RuntimeError, SafetensorError, CorralError) as exc:  # WRITE_ERRORS, or the store's
        raise _write_failed(step, exc, run_dir) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if previous and previous["artifact"] != digest:
        artifacts.delete(previous["artifact"], keep=[digest])
    return digest


def read_pointer(run_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((run_dir / POINTER).read_text()))
    except FileNotFoundError:
        return None


def load_checkpoint(
    run_dir: Path, artifacts: ArtifactStore, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    """Restore the last complete checkpoint into `model` and `optimizer`; returns its step (0: none)."""
    pointer = read_pointer(run_dir)
    if pointer is None:
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="restore-", dir=run_dir))  # one per process under DDP
    try:
        artifacts.get_dir(pointer["artifact"], scratch / "checkpoint")
        state = torch.load(scratch / "checkpoint" / "state.pt", weights_only=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return int(state["step"])


def clear(run_dir: Path, artifacts: ArtifactStore) -> None:
    """Forget a run's checkpoint (a fresh start, or a finished run)."""
    pointer = read_pointer(run_dir)
    if pointer:
        artifacts.delete(pointer["artifact"])
        (run_dir / POINTER).unlink(missing_ok=True)
