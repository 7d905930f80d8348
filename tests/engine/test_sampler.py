"""Sampler: greedy, temperature, top-k/top-p, seeds, penalties and logprobs on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from corral.engine.sampler import Sampler, top_k_top_p
from corral.engine.sequence import SamplingParams, Sequence
from corral.errors import InvalidInputError


def seq(tokens: list[int] | None = None, prompt_len: int | None = None, **params: object) -> Sequence:
    tokens = tokens or [0]
    s = Sequence(tokens[: prompt_len or len(tokens)], SamplingParams(**params), 4)  # type: ignore[arg-type]
    for t in tokens[prompt_len or len(tokens) :]:
        s.append_token(t)
    return s


LOGITS = torch.tensor([[1.0, 3.0, 2.0, 0.5, -1.0]])


def test_greedy_takes_the_argmax() -> None:
    assert Sampler()(LOGITS, [seq(temperature=0)])[0].token_id == 1


def test_top_k_one_is_greedy_even_when_hot() -> None:
    picks = {Sampler()(LOGITS, [seq(temperature=5.0, top_k=1)])[0].token_id for _ in range(20)}
    assert picks == {1}


def test_small_top_p_keeps_only_the_most_likely() -> None:
    picks = {Sampler()(LOGITS, [seq(temperature=1.0, top_p=0.1)])[0].token_id for _ in range(20)}
    assert picks == {1}


def test_top_k_top_p_masks_the_tail() -> None:
    masked = top_k_top_p(LOGITS, torch.tensor([3]), torch.tensor([1.0]))
    assert torch.isinf(masked[0, [3, 4]]).all() and torch.isfinite(masked[0, :3]).all()


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch() -> None:
    logits = torch.zeros(1, 50)
    alone = [Sampler()(logits, [seq(temperature=1.0, seed=42)])[0].token_id for _ in range(1)]
    sampler = Sampler()
    s = seq(temperature=1.0, seed=42)
    batched = sampler(torch.zeros(3, 50), [seq(temperature=1.0), s, seq(temperature=1.0)])[1].token_id
    assert alone == [batched]
    draws = [sampler(logits, [s])[0].token_id for _ in range(10)]
    assert len(set(draws)) > 1  # the generator advances: not the same token forever


def test_temperature_sampling_follows_the_distribution() -> None:
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    counts = torch.zeros(3)
    sampler = Sampler()
    for _ in range(600):
        counts[sampler(logits, [seq(temperature=1.0)])[0].token_id] += 1
    assert abs(counts[0] / 600 - 0.7) < 0.08


def test_repetition_penalty_demotes_seen_tokens() -> None:
    assert Sampler()(LOGITS, [seq([1, 0], temperature=0, repetition_penalty=10.0)])[0].token_id == 2


def test_frequency_and_presence_penalties_use_output_tokens_only() -> None:
    prompt_only = seq([1], temperature=0, frequency_penalty=2.0)
    assert Sampler()(LOGITS, [prompt_only])[0].token_id == 1
    repeated = seq([0, 1, 1], prompt_len=1, temperature=0, frequency_penalty=1.0)
    assert Sampler()(LOGITS, [repeated])[0].token_id == 2
    present = seq([0, 1], prompt_len=1, temperature=0, presence_penalty=1.5)
    assert Sampler()(LOGITS, [present])[0].token_id == 2


def test_logprobs_are_the_models_log_softmax() -> None:
    sample = Sampler()(LOGITS, [seq(temperature=0, logprobs=2)])[0]
    expected = torch.log_softmax(LOGITS[0], -1)
    assert sample.logprob is not None and math.isclose(sample.logprob, float(expected[1]), abs_tol=1e-6)
    assert [t for t, _ in sample.top_logprobs] == [1, 2]


@pytest.mark.parametrize(
    "bad", [{"max_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_k": -1}, {"logprobs": 21}]
)
def test_invalid_parameters_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        SamplingParams(**bad)  # type: ignore[arg-type]
