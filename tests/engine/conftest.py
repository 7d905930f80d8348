"""Tiny random models shared by the engine tests, and an HF reference to compare against."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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


LORA_TARGETS = {"llama": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "c_proj"]}


def make_lora_adapter(
    base_dir: Path, out: Path, arch: str = "llama", seed: int = 1, targets: list[str] | None = None
) -> object:
    """Save a PEFT LoRA adapter with non-zero B over `base_dir` to `out`; returns the merged HF model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=targets or LORA_TARGETS[arch],
            fan_in_fan_out=arch == "gpt2",  # GPT-2's Conv1D stores weights as [in, out]
        ),
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.normal_(0, 0.2)
            if "lora_B" in name:
                param.normal_(0, 0.2)  # B starts at zero; make the adapter actually change the model
    peft_model.save_pretrained(str(out))
    return peft_model.merge_and_unload().eval()


@pytest.fixture(scope="session", autouse=True)
def _auto_dtype_is_float32() -> Iterator[None]:
    """Tests compare text and logits with HF in fp32: `auto` must not move to bf16 on a machine with AMX."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("corral.engine.loader.fast_dtypes", lambda device: (False, False))
        yield
