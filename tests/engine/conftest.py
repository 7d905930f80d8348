"""Tiny random models shared by the engine tests, and an HF reference to compare against."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOL = 1e-4  # max abs logit difference from HF transformers in fp32; never loosen it to pass


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: the path of a tiny random model of an architecture, built once per session."""
    from corral.testing import make_tiny_model

    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            # a wide init makes logits spread out, so greedy decoding is not one repeated token
            root = tmp_path_factory.mktemp(f"tiny-{arch}")
            made[arch] = make_tiny_model(root, arch=arch, seed=0, initializer_range=0.2)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def hf_model() -> Callable[[Path], object]:
    """Factory: the transformers model for a directory, in fp32, eval mode, cached."""
    import torch
    from transformers import AutoModelForCausalLM

    cache: dict[Path, object] = {}

    def get(path: Path) -> object:
        if path not in cache:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
            model.eval()
            cache[path] = model
        return cache[path]

    return get
