"""Request state: sampling parameters and one sequence's tokens, progress and KV block table."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from corral.errors import InvalidInputError


@dataclass
class SamplingParams:
    """How to pick tokens and when to stop. Temperature 0 means greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None  # None = off; N = also return the N most likely tokens
    min_tokens: int = 0  # stop tokens are masked until this many tokens were generated (vLLM's)
    prompt_logprobs: int | None = None  # None = off; N = logprobs of the prompt's tokens, top N each
    grammar: Any = None  # an xgrammar CompiledGrammar the output must match (corral.engine.guided)
    adapter: str | None = None  # a LoRA adapter over the base, by name (corral.engine.lora); None = the base

    def __post_init__(self) -> None:
        checks = [
            (self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}"),
            (self.repetition_penalty > 0, f"repetition_penalty must be > 0, got {self.repetition_penalty}"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (0 <= self.min_tokens <= self.max_tokens, "min_tokens must be in [0, max_tokens]"),
            (
                self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= 20,
                "prompt_logprobs must be in [0, 20]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


_ids = itertools.count()


class Sequence:
    """One stream of tokens: the prompt, what was generated, and where its KV lives.

    `num_computed_tokens` counts tokens whose K/V are in the cache; the scheduler advances it by
    however many tokens it runs this step (a prefill chunk, or 1 for decode). Preemption drops
    the cache and sets it back to 0: the tokens are recomputed, the output is kept.
    """

    def __init__(
        self, token_ids: list[int], params: SamplingParams, block_size: int, request_id: str | None = None
    ) -> None:
        self.seq_id = next(_ids)
        self.request_id = request_id or str(self.seq_id)
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.params = params
        self.block_size = block_size
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []  # chained hashes of the full blocks already computed
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # how many prompt tokens the prefix cache supplied
        self.num_scheduled_tokens = 0  # set by the scheduler for the current step
        self.finish_reason: str | None = None
        self.output_text = ""
        self.prefix_offset = 0  # incremental detokenizing: output tokens [prefix, read) were decoded last
        self.read_offset = 0
        self.num_emitted_chars = 0
        self.arrival_time = 0.0
        self.first_token_time: float | None = None
        self.finish_time: float | None = None
        self.num_preemptions = 0
        # logprobs of each prompt token given the ones before (None for the first), when asked for:
        # (token id, logprob, [(top id, logprob)]) per position
        self.prompt_logprobs: list[Any] = [None]
        self.matcher: Any = None  # the grammar matcher of a guided request, fed each sampled token
        self.lora: Any = None  # the LoraWeights of `params.adapter`, set when the engine takes the request
        self.hash_seed: int | None = None  # starts the block-hash chain: K/V differ per adapter

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_blocks(self) -> int:
        return (len(self.token_ids) + self.block_size - 1) // self.block_size

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def is_prefill(self) -> bool:
        """Whether more than the last token still needs computing (a new or preempted sequence)."""
        return len(self.token_ids) - self.num_computed_tokens > 1

    def block_tokens(self, index: int) -> list[int]:
        start = index * self.block_size
        return self.token_ids[start : start + self.block_size]

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def finish(self, reason: str) -> None:
        self.status = SequenceStatus.FINISHED
        self.finish_reason = reason
