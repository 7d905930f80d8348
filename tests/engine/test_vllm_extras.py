"""vLLM's request extras through a real worker: min_tokens, prompt_logprobs, echo with logprobs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from tests.engine.conftest import TOL
from tests.engine.test_server import RunningWorker, start_worker

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams

PROMPT = [5, 17, 42, 9, 33, 61, 8, 21, 14, 70, 3, 52, 11, 40, 26, 19, 6, 81]  # longer than a block


@pytest.fixture(scope="module")
def worker(tiny_model: Callable) -> Iterator[RunningWorker]:
    running = start_worker(tiny_model("llama"))
    yield running
    running.stop()


def hf_prompt_logprobs(hf: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float()
    return logits.log_softmax(-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def test_min_tokens_holds_back_the_stop_token(tiny_model: Callable) -> None:
    engine = LLMEngine(tiny_model("llama"), EngineSettings(kv_cache_gb=0.001))
    first = engine.generate([PROMPT], SamplingParams(max_tokens=1, temperature=0))[0].output_token_ids[0]
    stops = SamplingParams(max_tokens=8, temperature=0, stop_token_ids=[first], ignore_eos=True)
    assert engine.generate([PROMPT], stops)[0].output_token_ids == [first]
    held = SamplingParams(max_tokens=8, temperature=0, stop_token_ids=[first], ignore_eos=True, min_tokens=4)
    out = engine.generate([PROMPT], held)[0].output_token_ids
    assert len(out) >= 4 and first not in out[:4]


def test_prompt_logprobs_match_hf_even_with_a_cached_prefix(
    worker: RunningWorker, tiny_model: Callable, hf_model: Callable
) -> None:
    client = worker.client()
    client.completions.create(model="tiny@1", prompt=PROMPT, max_tokens=1)  # fills the prefix cache
    reply = client.completions.create(
        model="tiny@1", prompt=PROMPT, max_tokens=2, temperature=0, extra_body={"prompt_logprobs": 2}
    )
    entries = reply.choices[0].model_extra["prompt_logprobs"]  # type: ignore[index]
    assert entries[0] is None and len(entries) == len(PROMPT)
    want = hf_prompt_logprobs(hf_model(tiny_model("llama")), PROMPT)
    got = torch.tensor([entries[i + 1][str(t)]["logprob"] for i, t in enumerate(PROMPT[1:])])
    assert (got - want).abs().max() < TOL
    assert all(len(e) in (2, 3) for e in entries[1:])  # the top 2, plus the prompt token when not among them


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_logprobs_scores_the_prompt(
    worker: RunningWorker, tiny_model: Callable, hf_model: Callable, stream: bool
) -> None:
    client = worker.client()
    text = "The quick brown fox jumps"
    kw: dict[str, Any] = {"model": "tiny@1", "prompt": text, "max_tokens": 2, "temperature": 0}
    if stream:
        chunks = list(client.completions.create(**kw, echo=True, logprobs=1, stream=True))
        whole = "".join(c.choices[0].text for c in chunks)
        first = chunks[0].choices[0].logprobs
    else:
        reply = client.completions.create(**kw, echo=True, logprobs=1)
        whole, first = reply.choices[0].text, reply.choices[0].logprobs
    plain = client.completions.create(**kw).choices[0].text
    assert whole == text + plain
    assert first is not None and first.token_logprobs is not None and first.token_logprobs[0] is None
    ids = worker.worker.encode(text, special=True)
    want = hf_prompt_logprobs(hf_model(tiny_model("llama")), ids)
    got = torch.tensor(first.token_logprobs[1 : len(ids)])
    assert (got - want).abs().max() < TOL


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_zero_max_tokens_returns_the_scored_prompt_only(
    worker: RunningWorker, tiny_model: Callable, hf_model: Callable, stream: bool
) -> None:
    client = worker.client()
    text = "The quick brown fox jumps"
    kw: dict[str, Any] = {"model": "tiny@1", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 0}
    if stream:
        chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
        parts = [c.choices[0] for c in chunks if c.choices]
        whole, lp, reason = "".join(c.text for c in parts), parts[0].logprobs, parts[-1].finish_reason
        usage = chunks[-1].usage
    else:
        reply = client.completions.create(**kw)
        choice, usage = reply.choices[0], reply.usage
        whole, lp, reason = choice.text, choice.logprobs, choice.finish_reason
    ids = worker.worker.encode(text, special=True)
    assert whole == text and reason == "length"
    assert usage is not None and usage.completion_tokens == 0 and usage.prompt_tokens == len(ids)
    assert lp is not None and lp.token_logprobs is not None and len(lp.token_logprobs) == len(ids)
    want = hf_prompt_logprobs(hf_model(tiny_model("llama")), ids)
    assert (torch.tensor(lp.token_logprobs[1:]) - want).abs().max() < TOL


def test_zero_max_tokens_without_echo_is_a_400_naming_echo(worker: RunningWorker) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        worker.client().completions.create(model="tiny@1", prompt="Hi", max_tokens=0)
    assert "max_tokens" in str(info.value) and "echo" in str(info.value)
