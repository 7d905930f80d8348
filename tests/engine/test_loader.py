"""Loading model directories: clear errors for bad ones, and LoRA adapters merged at load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.engine.conftest import TOL, make_lora_adapter

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams
from corral.errors import InvalidInputError, NotFoundError


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        LLMEngine(tmp_path / "nope")


def test_directory_without_config_says_so(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no config.json"):
        LLMEngine(tmp_path)


def test_malformed_config_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(InvalidInputError, match="config.json is not valid JSON"):
        LLMEngine(tmp_path)


def test_unsupported_architecture_lists_the_supported_ones(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InvalidInputError, match="supported: gpt2, llama"):
        LLMEngine(tmp_path)


def test_missing_weights_and_tensors_are_named(tmp_path: Path, tiny_model: Callable) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model("llama"), broken)
    weights = broken / "model.safetensors"
    weights.rename(broken / "weights.bak")
    with pytest.raises(InvalidInputError, match="no \\*.safetensors"):
        LLMEngine(broken)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(broken / "weights.bak"))
    del tensors["model.norm.weight"]
    save_file(tensors, str(weights))
    with pytest.raises(InvalidInputError, match="'norm.weight'"):
        LLMEngine(broken)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_adapter_is_merged_at_load_and_matches_peft(
    arch: str, tmp_path: Path, tiny_model: Callable
) -> None:
    pytest.importorskip("peft")
    base_dir = tiny_model(arch)
    adapter_dir = tmp_path / "adapter"
    merged: Any = make_lora_adapter(base_dir, adapter_dir, arch)

    prompt = list(range(10, 30))
    with torch.no_grad():
        ref = merged(torch.tensor([prompt])).logits[0, -1]
    adapted = prompt_logits(LLMEngine(base_dir, SMALL, adapter=adapter_dir, num_blocks=16), prompt)
    plain = prompt_logits(LLMEngine(base_dir, SMALL, num_blocks=16), prompt)
    assert float((adapted - ref).abs().max()) <= TOL
    assert float((plain - ref).abs().max()) > 1e-2  # the adapter really changed the model


SMALL = EngineSettings(block_size=4)


def prompt_logits(engine: LLMEngine, prompt: list[int]) -> torch.Tensor:
    """The logits after the prompt, through the engine's own scheduler and model runner."""
    seq = engine.add_request(prompt, SamplingParams(max_tokens=1, temperature=0))
    _, logits = engine.runner.run(engine.scheduler.schedule().seqs)
    assert seq.num_computed_tokens == 0
    return logits[0]


def test_auto_dtype_is_bf16_only_where_fast_and_a_dtype_without_kernels_is_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from corral.engine import loader
    from corral.engine.loader import pick_dtype
    from corral.errors import CorralError

    # on CPUs `auto` takes bf16 only where CPU_AUTO_BF16 says the engine is faster in it there
    monkeypatch.setattr(loader, "CPU_AUTO_BF16", False)
    assert pick_dtype("cpu", "auto", bf16_fast=True, fp16_fast=True) == "float32"
    monkeypatch.setattr(loader, "CPU_AUTO_BF16", True)
    assert pick_dtype("cpu", "auto", bf16_fast=True, fp16_fast=False) == "bfloat16"
    assert pick_dtype("cuda", "auto", bf16_fast=True, fp16_fast=True) == "bfloat16"
    assert pick_dtype("cpu", "auto", bf16_fast=False, fp16_fast=False) == "float32"
    assert pick_dtype("cuda", "auto", bf16_fast=False, fp16_fast=True) == "float16"
    assert pick_dtype("cpu", "bfloat16", bf16_fast=False, fp16_fast=False) == "bfloat16"  # slow, but runs
    with pytest.raises(CorralError, match="no bfloat16 support"):
        pick_dtype("cuda", "bfloat16", bf16_fast=False, fp16_fast=True)
    with pytest.raises(CorralError, match="no float16 kernels"):
        pick_dtype("cpu", "float16", bf16_fast=False, fp16_fast=False)


def test_bf16_counts_as_fast_on_a_cpu_only_with_bf16_instructions() -> None:
    from corral.engine.loader import cpu_has_native_bf16

    skylake = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq\n"
    assert not cpu_has_native_bf16(skylake)  # oneDNN emulates bf16 there: not faster than fp32
    assert cpu_has_native_bf16(skylake.replace("avx512dq", "avx512dq avx512_bf16"))
    assert cpu_has_native_bf16(skylake.replace("avx512dq", "amx_tile amx_bf16"))
    assert not cpu_has_native_bf16("")
