"""Logit agreement with HF transformers (fp32) at every step: batching, chunking, prefix hits, preemption.

Each step, every sequence that produced logits is compared with HF's forward pass over the same
tokens (no cache), to a max abs difference of TOL.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.engine.conftest import TOL

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams

ARCHES = ["gpt2", "llama"]


class LogitChecker:
    """Wraps the engine's model runner and checks every returned row against HF."""

    def __init__(self, engine: LLMEngine, hf: Any) -> None:
        self.hf, self.checked, self.worst = hf, 0, 0.0
        self._run = engine.runner.run
        engine.runner.run = self  # type: ignore[method-assign]

    def __call__(self, seqs: list[Any]) -> tuple[list[Any], torch.Tensor]:
        sampled, logits = self._run(seqs)
        with torch.no_grad():
            for seq, row in zip(sampled, logits, strict=True):
                ref = self.hf(torch.tensor([seq.token_ids])).logits[0, -1]
                diff = float((row - ref).abs().max())
                self.worst = max(self.worst, diff)
                assert diff <= TOL, f"seq {seq.request_id} at length {len(seq)}: max abs diff {diff:.2e}"
                self.checked += 1
        return sampled, logits


def prompt(seed: int, length: int, vocab: int = 300) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, vocab, (length,), generator=g).tolist()


GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)


def engine_for(path: Path, **settings: Any) -> LLMEngine:
    num_blocks = settings.pop("num_blocks", 64)
    return LLMEngine(path, EngineSettings(block_size=4, **settings), num_blocks=num_blocks)


@pytest.mark.parametrize("arch", ARCHES)
def test_single_request_matches_hf_every_step(arch: str, tiny_model: Callable, hf_model: Callable) -> None:
    engine = engine_for(tiny_model(arch))
    checker = LogitChecker(engine, hf_model(tiny_model(arch)))
    engine.generate([prompt(0, 9)], GREEDY)
    assert checker.checked == 12


@pytest.mark.parametrize("decode", ["rows", "gather", "gather-groups"])
@pytest.mark.parametrize("arch", ARCHES)
def test_mixed_lengths_arriving_at_different_steps_match_hf(
    arch: str, decode: str, tiny_model: Callable, hf_model: Callable
) -> None:
    # a small token budget forces chunked prefills to share steps with decodes
    engine = engine_for(tiny_model(arch), max_num_batched_tokens=16)
    rows = engine.runner.decode_rows
    if decode != "rows":  # decodes gather their context from the paged cache every step
        engine.runner.decode_rows = None
    if decode == "gather-groups":  # decodes split into several gather groups, some padded and masked
        engine.runner.group_tokens = 24
    checker = LogitChecker(engine, hf_model(tiny_model(arch)))
    arrivals = {0: [prompt(1, 3)], 2: [prompt(2, 37), prompt(3, 11)], 5: [prompt(4, 20)], 14: [prompt(5, 6)]}
    step = 0
    while step <= max(arrivals) or engine.has_unfinished():
        for ids in arrivals.get(step, []):
            engine.add_request(ids, GREEDY)
        engine.step()
        step += 1
    assert checker.checked == 5 * 12
    if decode == "rows":  # the first request's row was freed and taken by the last one
        assert rows is not None and list(rows.row_of.values()) == [0]


@pytest.mark.parametrize("arch", ARCHES)
def test_prefix_cache_hits_match_hf(arch: str, tiny_model: Callable, hf_model: Callable) -> None:
    engine = engine_for(tiny_model(arch))
    checker = LogitChecker(engine, hf_model(tiny_model(arch)))
    shared = prompt(5, 22)
    engine.generate([shared + prompt(6, 5)], GREEDY)
    later = engine.add_request(shared + prompt(7, 3), GREEDY)
    while engine.has_unfinished():
        engine.step()
    assert later.num_cached_tokens == 20  # five full blocks of the shared 22 tokens
    assert checker.checked == 2 * 12


@pytest.mark.parametrize("arch", ARCHES)
def test_logits_after_preemption_match_hf(arch: str, tiny_model: Callable, hf_model: Callable) -> None:
    engine = engine_for(tiny_model(arch), num_blocks=12)  # 48 slots for three 30-token sequences
    checker = LogitChecker(engine, hf_model(tiny_model(arch)))
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    seqs = engine.generate([prompt(8, 10), prompt(9, 9), prompt(10, 8)], params)
    assert engine.scheduler.num_preemptions > 0
    assert any(s.num_preemptions for s in seqs)
    assert all(s.num_output_tokens == 20 for s in seqs)
    assert checker.checked >= 60
    assert engine.block_manager.num_used_blocks == 0


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])  # Qwen2: q/k/v biases; Mistral: its config
def test_llama_family_variants_match_hf(arch: str, tiny_model: Callable, hf_model: Callable) -> None:
    engine = engine_for(tiny_model(arch))
    checker = LogitChecker(engine, hf_model(tiny_model(arch)))
    engine.generate([prompt(11, 14), prompt(12, 5)], GREEDY)
    assert checker.checked == 24
