"""The engine in bfloat16 against HF transformers in bfloat16, step by step and in greedy output.

TOL_BF16, how it was chosen: bf16 keeps 8 significant bits, so two correct bf16 forward passes
that round in a different order (fused QKV and gate/up matmuls, a fp32 softmax, oneDNN's kernels
against MKL's) disagree by far more than fp32's TOL. On these tiny models (logits up to about 7)
HF's own bf16 logits were up to 0.28 from its fp32 ones, and ours were at most 0.13 from HF's bf16
(llama 0.12, gpt2 0.07, qwen2 0.13, 4 prompts of 3-20 tokens, 16 steps). 0.25 sits under
HF's own bf16 error, while a real bug (a wrong mask, position or cache slot) moves logits by
whole units. Greedy outputs must match wherever the top two logits are more than TOL_BF16 apart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.engine.test_generation import assert_same_greedy
from tests.engine.test_model_runner import prompt

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams

TOL_BF16 = 0.25  # max abs logit difference from HF in bf16; see the module docstring


@pytest.fixture(scope="module")
def hf_bf16() -> Callable[[Path], Any]:
    from transformers import AutoModelForCausalLM

    cache: dict[Path, Any] = {}

    def get(path: Path) -> Any:
        if path not in cache:
            cache[path] = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16).eval()
        return cache[path]

    return get


def bf16_engine(path: Path) -> LLMEngine:
    return LLMEngine(path, EngineSettings(block_size=4, dtype="bfloat16"), num_blocks=64)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_bf16_logits_match_hf_bf16_every_step(arch: str, tiny_model: Callable, hf_bf16: Callable) -> None:
    engine, hf = bf16_engine(tiny_model(arch)), hf_bf16(tiny_model(arch))
    assert engine.runner.cache.k.dtype == torch.bfloat16  # the KV cache is in the model's dtype
    run, worst, checked = engine.runner.run, [0.0], [0]

    def checked_run(seqs: list[Any]) -> tuple[list[Any], torch.Tensor]:
        sampled, logits = run(seqs)
        with torch.no_grad():
            for seq, row in zip(sampled, logits, strict=True):
                ref = hf(torch.tensor([seq.token_ids])).logits[0, -1].float()
                worst[0] = max(worst[0], float((row.float().cpu() - ref).abs().max()))
                checked[0] += 1
        return sampled, logits

    engine.runner.run = checked_run  # type: ignore[method-assign]
    # lengths that put padded rows (an attention mask) into the decode groups
    prompts = [prompt(seed, length) for seed, length in enumerate((3, 7, 12, 20))]
    engine.generate(prompts, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    assert checked[0] >= 4 * 12
    assert worst[0] <= TOL_BF16, f"max abs logit difference from HF bf16 {worst[0]:.3f} > {TOL_BF16}"


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_bf16_greedy_equals_hf_bf16_generate(arch: str, tiny_model: Callable, hf_bf16: Callable) -> None:
    engine, hf = bf16_engine(tiny_model(arch)), hf_bf16(tiny_model(arch))
    prompts = [prompt(10 + seed, length) for seed, length in enumerate((5, 9, 16))]
    seqs = engine.generate(prompts, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
    for seq in seqs:
        assert seq.num_output_tokens == 20
        assert_same_greedy(hf, seq.token_ids[: seq.num_prompt_tokens], seq.output_token_ids, tol=TOL_BF16)


def test_both_half_decode_paths_agree_with_fp32_attention() -> None:
    """Few short rows take the upcast path, the rest two bf16 matmuls: each within bf16's rounding of
    fp32 attention on the same values, with and without a mask."""
    import torch.nn.functional as F

    from corral.engine.attention import _decode_attention_half, _decode_attention_upcast

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 2, 2, 16, generator=gen).bfloat16()  # [rows, kv_heads, group, dim]
    k, v = (torch.randn(3, 2, 40, 16, generator=gen).bfloat16() for _ in range(2))
    mask = torch.zeros(3, 1, 1, 40)
    mask[1, ..., 30:] = float("-inf")  # a shorter row in the group
    for m in (None, mask):
        want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=m, scale=0.25)
        for path in (_decode_attention_upcast, _decode_attention_half):
            got = path(q, k, v, m.bfloat16() if m is not None else None, 0.25)
            assert got.dtype == torch.bfloat16
            assert (got.float() - want).abs().max() < 0.03, path.__name__
