"""A tiny random Llama and a small chat dataset, registered in the test's own CORRAL_HOME."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


@dataclass
class Setup:
    registry: object
    base: str
    dataset: str
    base_dir: Path


def chat_rows(n: int = 120) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "system", "content": "answer with a number"},
                {"role": "user", "content": f"what is {i} plus one?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ]
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from corral.testing.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", "llama")


@pytest.fixture
def setup(tiny_llama: Path, tmp_path: Path) -> Setup:
    from corral.registry import open_registry

    reg = open_registry()
    base_dir = tmp_path / "base"
    shutil.copytree(tiny_llama, base_dir)
    base = reg.models.register("tiny", base_dir)
    dataset = reg.datasets.register("plus", chat_rows())
    return Setup(reg, base.ref, dataset.ref, base_dir)


@pytest.fixture
def spec_data():  # type: ignore[no-untyped-def]
    """Factory: a small training spec over `setup`, with overrides."""
    return make_spec_data


def make_spec_data(setup: Setup, **overrides: object) -> dict:
    data = {
        "output": "tuned",
        "base": setup.base,
        "dataset": setup.dataset,
        "max_steps": 4,
        "batch_size": 4,
        "lr": 1e-3,
        "warmup_steps": 1,
        "eval_every": 2,
        "checkpoint_every": 2,
    }
    return {**data, **overrides}
