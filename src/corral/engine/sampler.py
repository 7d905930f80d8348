"""Pick the next token of each sequence from its logits: penalties, temperature, top-k/p, seeds, logprobs.

Greedy rows take the argmax. Seeded rows draw from their own `torch.Generator`, so a seeded
request gives the same tokens whatever it is batched with; unseeded rows share the global RNG.
Logprobs are those of the model's distribution (before penalties and temperature), as OpenAI's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor

from corral.engine.guided import apply_masks
from corral.engine.sequence import Sequence


@dataclass
class Sample:
    token_id: int
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] = field(default_factory=list)


def row_argmax(x: Tensor) -> list[int]:
    """Each row's first maximum, as `argmax`: `max(dim).indices` is the same index and on CPU
    2.4-2.8x faster (torch 2.13: 0.84 against 2.34 ms for 32 rows of GPT-2's 50,257 logits)."""
    return [int(t) for t in x.max(dim=-1).indices.tolist()]


def apply_penalties(logits: Tensor, seqs: list[Sequence]) -> None:
    """Repetition (HF style, over prompt and output), frequency and presence (OpenAI style, output only)."""
    for row, seq in enumerate(seqs):
        p = seq.params
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(sorted(set(seq.token_ids)), device=logits.device)
            values = logits[row, seen]
            logits[row, seen] = torch.where(
                values > 0, values / p.repetition_penalty, values * p.repetition_penalty
            )
        if p.frequency_penalty or p.presence_penalty:
            counts = Counter(seq.output_token_ids)
            if counts:
                ids = torch.tensor(list(counts), device=logits.device)
                freq = torch.tensor(list(counts.values()), dtype=logits.dtype, device=logits.device)
                logits[row, ids] -= freq * p.frequency_penalty + p.presence_penalty


def top_k_top_p(logits: Tensor, top_k: Tensor, top_p: Tensor) -> Tensor:
    """Mask (to -inf) everything outside each row's top-k and nucleus top-p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), torch.full_like(top_k, vocab))
    ranks = torch.arange(vocab, device=logits.device)[None, :]
    drop = ranks >= k[:, None]
    probs = sorted_logits.masked_fill(drop, float("-inf")).softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # probability mass strictly above each token
    drop |= before > top_p[:, None]
    drop[:, 0] = False  # always keep the most likely token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def _logprobs(raw: Tensor, seqs: list[Sequence], chosen: list[int]) -> list[Sample]:
    """The chosen tokens' logprobs and each row's top N, in one pass for the rows that asked."""
    samples = [Sample(t) for t in chosen]
    wanted = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
    if not wanted:
        return samples
    logp = raw[wanted].log_softmax(dim=-1)
    picked = torch.tensor([chosen[i] for i in wanted], device=logp.device)
    values = logp.gather(1, picked[:, None])[:, 0].tolist()
    most = max(seqs[i].params.logprobs or 0 for i in wanted)
    top_values, top_ids = logp.topk(most, dim=-1) if most else (logp[:, :0], logp[:, :0].long())
    top = [
        list(zip(ids, vs, strict=True)) for ids, vs in zip(top_ids.tolist(), top_values.tolist(), strict=True)
    ]
    for j, i in enumerate(wanted):
        samples[i].logprob = values[j]
        samples[i].top_logprobs = top[j][: seqs[i].params.logprobs or 0]
    return samples


class Sampler:
    def __init__(self) -> None:
        self._generators: dict[int, torch.Generator] = {}

    def _generator(self, seq: Sequence, device: torch.device) -> torch.Generator:
        gen = self._generators.get(seq.seq_id)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(seq.params.seed or 0)
            self._generators[seq.seq_id] = gen
        return gen

    def forget(self, seq: Sequence) -> None:
        self._generators.pop(seq.seq_id, None)

    def __call__(self, logits: Tensor, seqs: list[Sequence]) -> list[Sample]:
        """logits: [len(seqs), vocab] fp32, one row per sequence that needs a token."""
        raw = logits
        if any(
            s.params.repetition_penalty != 1 or s.params.frequency_penalty or s.params.presence_penalty
            for s in seqs
        ):
            logits = logits.clone()
            apply_penalties(logits, seqs)
        guided = [(i, s.matcher) for i, s in enumerate(seqs) if s.matcher is not None]
        early = [i for i, s in enumerate(seqs) if s.num_output_tokens < s.params.min_tokens]
        if guided or early:
            logits = logits.clone() if logits is raw else logits
            if guided:
                apply_masks(logits, guided)
            for i in early:
                logits[i, seqs[i].params.stop_token_ids] = float("-inf")
        chosen = row_argmax(logits)
        rows = [i for i, s in enumerate(seqs) if not s.params.greedy]
        if rows:
            for i, token in zip(rows, self._draw(logits, [seqs[i] for i in rows], rows), strict=True):
                chosen[i] = token
        return _logprobs(raw, seqs, chosen)

    def _draw(self, logits: Tensor, seqs: list[Sequence], rows: list[int]) -> list[int]:
        """One token per sampled row, drawn for all rows at once.

        `argmax(p / E)` with E ~ Exp(1) per token is a draw from p (the exponential race, as vLLM
        samples): one kernel for the batch instead of a multinomial call per row. Seeded rows
        fill their noise from their own generator, so their tokens do not depend on the batch.
        """
        device = logits.device
        sub = logits[rows] if len(rows) < logits.shape[0] else logits
        temps = torch.tensor([s.params.temperature for s in seqs], device=device)
        sub = sub / temps[:, None]
        if any(s.params.top_k or s.params.top_p < 1 for s in seqs):
            top_k = torch.tensor([s.params.top_k for s in seqs], device=device)
            top_p = torch.tensor([s.params.top_p for s in seqs], device=device)
            sub = top_k_top_p(sub, top_k, top_p)
        probs = sub.softmax(dim=-1)
        noise = torch.empty_like(probs).exponential_()
        for j, seq in enumerate(seqs):
            if seq.params.seed is not None:
                noise[j].exponential_(generator=self._generator(seq, device))
        return row_argmax(probs.div_(noise.clamp_(min=1e-20)))
