"""Turn a scheduled batch into one forward pass over the paged cache and return the logits to sample."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache, PrefillSegment
from corral.engine.models import CausalLM
from corral.engine.sequence import Sequence


def set_cpu_threads() -> None:
    """Use every core this process may run on (torch's default can be lower in containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(cores)


class ModelRunner:
    def __init__(
        self, model: CausalLM, num_blocks: int, block_size: int, device: torch.device, dtype: torch.dtype
    ):
        self.model = model
        self.block_size = block_size
        self.device = device
        self.cache = KVCache(
            model.num_layers, model.num_kv_heads, model.head_dim, num_blocks, block_size, dtype, device
        )
        if device.type == "cpu":
            set_cpu_threads()

    def _slots(self, block_tables: Tensor) -> Tensor:
        """[seqs, blocks] block ids -> [seqs, blocks * block_size] slot ids, in token order."""
        offsets = torch.arange(self.block_size)
        return (block_tables[:, :, None] * self.block_size + offsets).flatten(1)

    def prepare(
        self, seqs: list[Sequence]
    ) -> tuple[Tensor, Tensor, AttentionMetadata, list[Sequence], Tensor]:
        """Flatten the batch: single-token queries first, then prefill chunks, no padding between."""
        singles = [s for s in seqs if s.num_scheduled_tokens == 1]
        ordered = singles + [s for s in seqs if s.num_scheduled_tokens > 1]
        ids: list[int] = []
        positions: list[int] = []
        seq_rows: list[int] = []
        sampled: list[Sequence] = []
        logit_rows: list[int] = []
        for row, s in enumerate(ordered):
            start, n = s.num_computed_tokens, s.num_scheduled_tokens
            ids.extend(s.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            seq_rows.extend([row] * n)
            if start + n == len(s):
                sampled.append(s)
                logit_rows.append(len(ids) - 1)
        width = max(len(s.block_table) for s in ordered)
        tables = torch.tensor([s.block_table + [0] * (width - len(s.block_table)) for s in ordered])
        slots = self._slots(tables)
        pos = torch.tensor(positions)
        meta = AttentionMetadata(slot_mapping=slots[torch.tensor(seq_rows), pos])
        if singles:
            b = len(singles)
            ctx = torch.tensor([s.num_computed_tokens + 1 for s in singles])
            longest = int(ctx.max())
            meta.num_decode = b
            meta.decode_slots = slots[:b, :longest]
            if int(ctx.min()) != longest:
                pad = torch.arange(longest)[None, :] >= ctx[:, None]
                mask = torch.zeros(b, longest).masked_fill_(pad, float("-inf"))
                meta.decode_mask = mask.view(b, 1, 1, longest)
        q_start = len(singles)
        for row, s in enumerate(ordered[len(singles) :], start=len(singles)):
            start, n = s.num_computed_tokens, s.num_scheduled_tokens
            causal = None
            if start:
                causal = torch.arange(start + n)[None, :] <= torch.arange(n)[:, None] + start
            meta.prefills.append(PrefillSegment(q_start, n, slots[row, : start + n], causal))
            q_start += n
        return torch.tensor(ids), pos, meta, sampled, torch.tensor(logit_rows, dtype=torch.long)

    def _to_device(self, meta: AttentionMetadata, dtype: torch.dtype) -> AttentionMetadata:
        d = self.device
        meta.slot_mapping = meta.slot_mapping.to(d)
        if meta.decode_slots is not None:
            meta.decode_slots = meta.decode_slots.to(d)
        if meta.decode_mask is not None:
            meta.decode_mask = meta.decode_mask.to(d, dtype)
        for seg in meta.prefills:
            seg.context_slots = seg.context_slots.to(d)
            seg.causal_mask = None if seg.causal_mask is None else seg.causal_mask.to(d)
        return meta

    @torch.inference_mode()
    def run(self, seqs: list[Sequence]) -> tuple[list[Sequence], Tensor]:
        """One forward pass; returns the sequences that reached their last token and their logits (fp32)."""
        ids, positions, meta, sampled, rows = self.prepare(seqs)
        meta = self._to_device(meta, self.cache.k.dtype)
        hidden = self.model.forward(ids.to(self.device), positions.to(self.device), self.cache, meta)
        if not sampled:
            return sampled, hidden.new_empty((0, self.model.vocab_size), dtype=torch.float32)
        logits = self.model.logits(hidden[rows.to(self.device)])
        return sampled, logits.float()
