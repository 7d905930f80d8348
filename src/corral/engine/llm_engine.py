"""The engine loop: add requests, step (schedule, forward, sample, detokenize, stop), abort.

`LLMEngine` is synchronous and single-threaded; `corral.engine.async_engine.AsyncEngine` drives it
from asyncio for the worker server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from corral.config import EngineSettings
from corral.engine.attention import KVCache
from corral.engine.block_manager import BlockManager
from corral.engine.guided import GrammarBook
from corral.engine.loader import LoadedModel, load_model, resolve_device_dtype
from corral.engine.lora import AdapterBook, Finder
from corral.engine.model_runner import ModelRunner
from corral.engine.sampler import Sample, Sampler
from corral.engine.scheduler import Scheduler
from corral.engine.sequence import SamplingParams, Sequence
from corral.errors import InvalidInputError, OverloadedError


@dataclass
class StepOutput:
    """What one step produced for one sequence."""

    request_id: str
    seq: Sequence
    token_ids: list[int]
    text: str  # new text since the last output (held back while it might start a stop string)
    finished: bool
    finish_reason: str | None
    logprobs: list[Sample] = field(default_factory=list)


@dataclass
class EngineStats:
    prompt_tokens: int = 0  # prompt tokens computed (cache hits excluded)
    generation_tokens: int = 0
    steps: int = 0
    aborted: int = 0


DEFAULT_KV_CACHE_CAP_GB = 1.0


def kv_cache_blocks(
    bytes_per_block: int, block_size: int, max_model_len: int, max_num_seqs: int, kv_cache_gb: float | None
) -> int:
    """KV blocks to allocate: `kv_cache_gb` when given; else every sequence at full context, at most 1 GiB.

    A 4 MB model with a 256-token context then takes a few MB, not a gigabyte per worker.
    """
    if kv_cache_gb is not None:
        return max(1, int(kv_cache_gb * 2**30) // bytes_per_block)
    wanted = max_num_seqs * -(-max_model_len // block_size)
    cap = int(DEFAULT_KV_CACHE_CAP_GB * 2**30) // bytes_per_block
    return max(1, min(wanted, cap))


def text_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """Token ids -> text without special tokens: the fast tokenizer's own decoder where that is all
    `tokenizer.decode` would do (no space clean-up), skipping its per-call Python checks."""
    if tokenizer is None:
        return lambda ids: ""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return lambda ids: str(backend.decode(ids, skip_special_tokens=True))
    return lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True))


class LLMEngine:
    def __init__(
        self,
        model_path: str | Path,
        settings: EngineSettings | None = None,
        *,
        adapter: str | Path | None = None,
        adapters: dict[str, Path] | Finder | None = None,
        num_blocks: int | None = None,
        enable_prefix_caching: bool = True,
        with_tokenizer: bool = True,
    ) -> None:
        self.settings = settings or EngineSettings()
        device, dtype = resolve_device_dtype(self.settings.device, self.settings.dtype)
        self.loaded: LoadedModel = load_model(model_path, device, dtype, adapter, with_tokenizer)
        self.tokenizer = self.loaded.tokenizer
        self._decode = text_decoder(self.tokenizer)
        model = self.loaded.model
        bs = self.settings.block_size
        if num_blocks is None:
            per_block = KVCache.bytes_per_block(
                model.num_layers, model.num_kv_heads, model.head_dim, bs, dtype
            )
            num_blocks = kv_cache_blocks(
                per_block, bs, model.max_model_len, self.settings.max_num_seqs, self.settings.kv_cache_gb
            )
        self.block_manager = BlockManager(num_blocks, bs, enable_prefix_caching)
        self.scheduler = Scheduler(
            self.block_manager, self.settings.max_num_seqs, self.settings.max_num_batched_tokens
        )
        self.runner = ModelRunner(model, num_blocks, bs, device, dtype)
        self.sampler = Sampler()
        self.max_model_len = min(model.max_model_len, num_blocks * bs)
        self.seqs: dict[str, Sequence] = {}
        self.stats = EngineStats()
        # LoRA adapters served per request over this base: by name (a dict of directories) or found
        # by a function (the worker's registry lookup); `adapter` above is merged into the base instead
        if isinstance(adapters, dict):
            self.adapters = AdapterBook.from_dirs(model, adapters, self.settings.max_loras)
        else:
            self.adapters = AdapterBook(model, adapters, self.settings.max_loras)

    @cached_property
    def grammars(self) -> GrammarBook:
        """The guided-decoding compiler for this model's tokenizer, built on first use."""
        if self.tokenizer is None:
            raise InvalidInputError("this worker has no tokenizer, so it cannot guide decoding")
        vocab = self.loaded.model.vocab_size
        return GrammarBook(self.tokenizer, vocab, list(self.loaded.eos_token_ids))

    # -- requests -----------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise InvalidInputError("this engine has no tokenizer; pass token ids")
        return list(self.tokenizer.encode(prompt, add_special_tokens=False))

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise the error a client should see, before anything is queued."""
        if not prompt_ids:
            raise InvalidInputError("the prompt is empty")
        if any(not 0 <= t < self.loaded.model.vocab_size for t in prompt_ids):
            raise InvalidInputError(f"token ids must be in [0, {self.loaded.model.vocab_size})")
        limit, n = self.max_model_len, len(prompt_ids)
        if n + params.max_tokens > limit:
            raise InvalidInputError(
                f"this model's maximum context length is {limit} tokens, but the prompt has {n} tokens "
                f"and max_tokens asks for {params.max_tokens} more ({n + params.max_tokens} in all)",
                hint="shorten the prompt or lower max_tokens",
            )
        waiting = len(self.scheduler.waiting)
        if waiting >= self.settings.max_waiting:
            raise OverloadedError(
                f"the worker's queue is full ({waiting} requests waiting)", retry_after_s=1.0
            )

    def add_request(
        self, prompt: str | list[int], params: SamplingParams | None = None, request_id: str | None = None
    ) -> Sequence:
        params = params or SamplingParams()
        ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
        self.check_request(ids, params)
        seq = Sequence(ids, params, self.settings.block_size, request_id)
        if seq.request_id in self.seqs:
            raise InvalidInputError(f"request id {seq.request_id!r} is already running")
        if not params.ignore_eos:
            params.stop_token_ids = sorted(set(params.stop_token_ids) | set(self.loaded.eos_token_ids))
        if params.grammar is not None:
            seq.matcher = self.grammars.matcher(params.grammar)
        if params.adapter is not None:
            seq.lora = self.adapters.get(params.adapter)
            seq.hash_seed = seq.lora.salt
        seq.arrival_time = time.monotonic()
        self.seqs[seq.request_id] = seq
        self.scheduler.add(seq)
        return seq

    def abort(self, request_id: str) -> bool:
        """Stop a request and free its blocks; False when it is unknown or already finished."""
        seq = self.seqs.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.abort(seq)
        self.sampler.forget(seq)
        self.stats.aborted += 1
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_work()

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> list[StepOutput]:
        out = self.scheduler.schedule()
        if not out:
            return []
        sampled, logits = self.runner.run(out.seqs)
        self.scheduler.advance(out)
        self.stats.steps += 1
        self.stats.prompt_tokens += sum(
            s.num_scheduled_tokens for s in out.seqs if s.num_scheduled_tokens > 1
        )
        outputs = [
            self._record(seq, sample)
            for seq, sample in zip(sampled, self.sampler(logits, sampled), strict=True)
        ]
        self.scheduler.release_finished(out)
        for o in outputs:
            if o.finished:
                self.seqs.pop(o.request_id, None)
                self.sampler.forget(o.seq)
        return outputs

    def _record(self, seq: Sequence, sample: Sample) -> StepOutput:
        seq.append_token(sample.token_id)
        if seq.matcher is not None and not seq.matcher.is_terminated():
            seq.matcher.accept_token(sample.token_id)
        self.stats.generation_tokens += 1
        if seq.first_token_time is None:
            seq.first_token_time = time.monotonic()
        p = seq.params
        if sample.token_id in p.stop_token_ids:
            seq.finish("stop")
        elif seq.num_output_tokens >= p.max_tokens or len(seq) >= self.max_model_len:
            seq.finish("length")
        text = self._update_text(seq)
        if seq.is_finished:
            seq.finish_time = time.monotonic()
        logprobs = [sample] if p.logprobs is not None else []
        return StepOutput(
            seq.request_id, seq, [sample.token_id], text, seq.is_finished, seq.finish_reason, logprobs
        )

    def _new_text(self, seq: Sequence) -> str:
        """The text the newest tokens add, decoding only a short window (vLLM's incremental detokenizing).

        Decoding the whole output every step costs O(length) per token. Instead the tokens since
        `read_offset` are decoded together with the chunk before them (from `prefix_offset`), and
        the text past that chunk's own is new: the chunk carries the spacing context (a leading
        space a tokenizer strips at the start of a decode, merged bytes of one character).
        """
        start = seq.num_prompt_tokens
        window = seq.token_ids[start + seq.prefix_offset :]
        held = window[: seq.read_offset - seq.prefix_offset]
        prefix = self._decode(held) if held else ""
        text = self._decode(window)
        if len(text) <= len(prefix) or (text.endswith("\ufffd") and not seq.is_finished):
            return ""  # nothing visible yet (a special token), or an incomplete UTF-8 character
        seq.prefix_offset, seq.read_offset = seq.read_offset, seq.num_output_tokens
        return text[len(prefix) :]

    def _update_text(self, seq: Sequence) -> str:
        """Detokenize, cut at the first stop string, and return the text not yet emitted."""
        if self.tokenizer is None:
            return ""
        text = seq.output_text + self._new_text(seq)
        stops = seq.params.stop
        for stop in stops:
            at = text.find(stop, max(0, len(seq.output_text) - len(stop)))
            if at != -1:
                text = text[:at]
                if not seq.is_finished or seq.finish_reason == "length":
                    seq.finish("stop")
        seq.output_text = text
        hold = 0 if seq.is_finished or not stops else max(len(s) for s in stops) - 1
        end = max(seq.num_emitted_chars, len(text) - hold)
        delta = text[seq.num_emitted_chars : end]
        seq.num_emitted_chars = end
        return delta

    def generate(
        self, prompts: list[str] | list[list[int]], params: SamplingParams | None = None
    ) -> list[Sequence]:
        """Run prompts to completion (for scripts and tests); returns their finished sequences."""
        seqs = [self.add_request(p, replace(params) if params else None) for p in prompts]
        while self.has_unfinished():
            self.step()
        return seqs
