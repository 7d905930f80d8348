"""Several LoRA adapters over one base in one batch give each adapter's own (merged) model's tokens."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.engine.conftest import TOL, make_lora_adapter
from tests.engine.test_generation import PROMPTS, assert_same_greedy

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams
from corral.errors import InvalidInputError, NotFoundError

# the second adapter touches other projections (and Llama's fused ones at other offsets) than the first
OTHER_TARGETS = {"llama": ["k_proj", "o_proj", "gate_proj", "up_proj"], "gpt2": ["c_attn", "c_fc"]}
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=0)


@pytest.fixture(scope="module")
def adapters(tiny_model: Callable, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Any]:
    """Per architecture: {name: (adapter dir, the HF model with it merged)} for two adapters."""
    pytest.importorskip("peft")
    made: dict[str, dict[str, tuple[Path, Any]]] = {}

    def get(arch: str) -> dict[str, tuple[Path, Any]]:
        if arch not in made:
            root = tmp_path_factory.mktemp(f"lora-{arch}")
            base = tiny_model(arch)
            made[arch] = {
                "first": (root / "a", make_lora_adapter(base, root / "a", arch, seed=1)),
                "second": (root / "b", make_lora_adapter(base, root / "b", arch, 2, OTHER_TARGETS[arch])),
            }
        return made[arch]

    return get


def engine_with(base: Path, found: dict[str, tuple[Path, Any]], **settings: Any) -> LLMEngine:
    dirs = {name: d for name, (d, _) in found.items()}
    return LLMEngine(base, EngineSettings(kv_cache_gb=0.002, block_size=4, **settings), adapters=dirs)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_adapters_mixed_in_one_batch_give_each_merged_models_tokens(
    arch: str, tiny_model: Callable, hf_model: Callable, adapters: Callable
) -> None:
    base, found = tiny_model(arch), adapters(arch)
    engine = engine_with(base, found)
    tok = engine.tokenizer
    names: list[str | None] = ["first", "second", None]
    jobs = [(p, names[i % 3]) for i, p in enumerate(PROMPTS + PROMPTS[:2])]  # alternating, all at once
    seqs = [engine.add_request(p, replace(GREEDY, adapter=name)) for p, name in jobs]
    while engine.has_unfinished():
        engine.step()
    assert engine.stats.steps < 2 * (GREEDY.max_tokens + 2)  # they really ran batched together
    for (prompt, name), seq in zip(jobs, seqs, strict=True):
        reference = found[name][1] if name else hf_model(base)
        ids = tok.encode(prompt, add_special_tokens=False)
        assert_same_greedy(reference, ids, seq.output_token_ids)


def test_mixed_batch_logprobs_match_the_engine_with_the_adapter_merged_at_load(
    tiny_model: Callable, adapters: Callable
) -> None:
    """Logit-level: every prompt position's logprob, adapters mixed in one prefill, within TOL of merged."""
    base, found = tiny_model("llama"), adapters("llama")
    engine = engine_with(base, found)
    scored = replace(GREEDY, max_tokens=1, prompt_logprobs=0)
    prompt = PROMPTS[2]
    mixed = [engine.add_request(prompt, replace(scored, adapter=n)) for n in ("first", None, "second")]
    engine.step()
    plain = torch.tensor([lp for _, lp, _ in mixed[1].prompt_logprobs[1:]])
    for name, seq in (("first", mixed[0]), ("second", mixed[2])):
        merged = LLMEngine(base, EngineSettings(kv_cache_gb=0.002, block_size=4), adapter=found[name][0])
        [alone] = merged.generate([prompt], scored)
        ours = torch.tensor([lp for _, lp, _ in seq.prompt_logprobs[1:]])
        want = torch.tensor([lp for _, lp, _ in alone.prompt_logprobs[1:]])
        assert len(ours) == len(engine.encode(prompt)) - 1
        assert float((ours - want).abs().max()) <= TOL
        assert float((ours - plain).abs().max()) > 1e-2  # the adapter really changed its rows


def test_the_prefix_cache_never_shares_blocks_between_adapters(
    tiny_model: Callable, adapters: Callable
) -> None:
    base, found = tiny_model("llama"), adapters("llama")
    engine = engine_with(base, found)
    prompt = PROMPTS[2]  # several full blocks
    [first] = engine.generate([prompt], replace(GREEDY, adapter="first"))
    hits = engine.block_manager.num_cache_hits
    [second] = engine.generate([prompt], replace(GREEDY, adapter="second"))
    assert engine.block_manager.num_cache_hits == hits  # nothing reused from the other adapter
    [again] = engine.generate([prompt], replace(GREEDY, adapter="second"))
    assert engine.block_manager.num_cache_hits > hits  # but the same adapter hits its own blocks
    assert again.output_token_ids == second.output_token_ids != first.output_token_ids


def test_least_recently_used_adapter_is_dropped_past_the_cap(
    tiny_model: Callable, adapters: Callable
) -> None:
    base, found = tiny_model("llama"), adapters("llama")
    engine = engine_with(base, found, max_loras=1)
    short = SamplingParams(max_tokens=2, temperature=0)
    for name in ("first", "second", "second", "first"):
        engine.generate(["Hello"], replace(short, adapter=name))
    assert engine.adapters.loaded == ["first"] and engine.adapters.loads == 3
    with pytest.raises(NotFoundError, match="'third'"):
        engine.add_request("Hello", replace(short, adapter="third"))


def test_an_adapter_on_a_layer_the_engine_cannot_apply_is_refused(
    tiny_model: Callable, tmp_path: Path
) -> None:
    pytest.importorskip("peft")
    base = tiny_model("llama")
    make_lora_adapter(base, tmp_path / "head", "llama", targets=["lm_head"])
    engine = LLMEngine(base, EngineSettings(kv_cache_gb=0.002), adapters={"head": tmp_path / "head"})
    with pytest.raises(InvalidInputError, match="lm_head"):
        engine.add_request("Hello", SamplingParams(adapter="head"))


def test_a_worker_serves_each_adapter_by_model_name_over_http(
    tiny_model: Callable, adapters: Callable
) -> None:
    import openai
    from tests.engine.test_server import RunningWorker

    from corral.engine.server import Worker

    base, found = tiny_model("llama"), adapters("llama")
    running = RunningWorker(Worker(engine_with(base, found), ["tiny@1"]))
    try:
        client = running.client()
        kw: dict[str, Any] = {"prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0}
        got = {
            m: client.completions.create(model=m, **kw).choices[0].text for m in ("first", "second", "tiny@1")
        }
        for name in ("first", "second"):
            merged = LLMEngine(base, EngineSettings(kv_cache_gb=0.002, block_size=4), adapter=found[name][0])
            [alone] = merged.generate([PROMPTS[1]], SamplingParams(max_tokens=6, temperature=0))
            assert got[name] == alone.output_text
        listed = [m.id for m in client.models.list().data]
        assert {"tiny@1", "first", "second"} <= set(listed)
        with pytest.raises(openai.NotFoundError, match="third"):
            client.completions.create(model="third", **kw)
    finally:
        running.stop()
