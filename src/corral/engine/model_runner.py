"""Turn a scheduled batch into one forward pass over the paged cache and return the logits to sample."""

from __future__ import annotations

import ctypes
import os
import sys

import torch
from torch import Tensor

from corral.engine.attention import AttentionMetadata, DecodeGroup, KVCache, PrefillSegment
from corral.engine.decode_rows import DecodeRows
from corral.engine.loader import cpu_flags
from corral.engine.lora import LoraBatch
from corral.engine.models import CausalLM
from corral.engine.sequence import Sequence


def set_cpu_threads() -> None:
    """Use every core this process may run on (torch's default can be lower in containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    torch.set_num_threads(cores)


# Decode context gathered per attention call on CPU, of K and of V each: 3 MiB (1024 GPT-2
# tokens) stays in L2/L3 between the gather and the attention that reads it. Measured on the
# GPT-2 benchmark's batch-32 forward: 0.75 and 6 MiB were about 8% slower, 12 MiB 38% and the
# whole batch at once 56% slower.
CPU_GATHER_BYTES = 3 << 20


# memory the decode rows may take beside the KV cache: its size, but at least 64 MiB (a small
# cache's rows round up to whole 64-token contexts) and at most 1 GiB
DECODE_ROWS_MIN_BYTES, DECODE_ROWS_MAX_BYTES = 64 << 20, 1 << 30


def keep_freed_memory() -> None:
    """Keep freed temporaries in the heap instead of handing each back to the OS (glibc only).

    By default glibc gives a large buffer (a step's activations, gathered context) its own mmap
    and unmaps it when freed, so the next step faults every 4 KiB page in again; on the GPT-2
    benchmark the decode steps spent more time in page faults than in matmuls. Buffers under
    256 MiB now come from the heap, which keeps up to 512 MiB free before trimming. The cost is
    that RSS stays at the largest step's high-water mark.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not mallopt(m_mmap_threshold, 256 << 20):
        mallopt(m_mmap_threshold, 32 << 20)  # older glibc cap the threshold at 32 MiB
    mallopt(m_trim_threshold, 512 << 20)


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
        # most (padded) context tokens one decode attention call gathers: few enough to stay in
        # the CPU caches on CPU; on an accelerator the whole batch at once
        row_bytes = model.num_kv_heads * model.head_dim * self.cache.k.element_size()
        self.group_tokens = (
            max(block_size, CPU_GATHER_BYTES // row_bytes) if device.type == "cpu" else 1 << 30
        )
        # decodes keep their context in contiguous rows between steps on CPU, in about the KV
        # cache's own size again (corral.engine.decode_rows); accelerators gather the whole batch
        self.decode_rows: DecodeRows | None = None
        if device.type == "cpu":
            kv_bytes = 2 * self.cache.k.numel() * self.cache.k.element_size()
            budget = min(max(kv_bytes, DECODE_ROWS_MIN_BYTES), DECODE_ROWS_MAX_BYTES)
            self.decode_rows = DecodeRows(self.cache, budget)
            # torch's fused SDPA is fast in bf16 where oneDNN/ATen have AMX kernels, slow without
            self.cache.fused_half_decode = dtype == torch.bfloat16 and "amx_bf16" in cpu_flags()
            set_cpu_threads()
            keep_freed_memory()

    def _slots(self, block_tables: Tensor) -> Tensor:
        """[seqs, blocks] block ids -> [seqs, blocks * block_size] slot ids, in token order."""
        offsets = torch.arange(self.block_size)
        return (block_tables[:, :, None] * self.block_size + offsets).flatten(1)

    def prepare(
        self, seqs: list[Sequence]
    ) -> tuple[Tensor, Tensor, AttentionMetadata, list[Sequence], Tensor, LoraBatch | None]:
        """Flatten the batch: decodes first (in row order, or longest context first when gathered),
        then prefill chunks, unpadded."""
        singles = [s for s in seqs if s.num_scheduled_tokens == 1]
        rows = self.decode_rows.assign(singles) if self.decode_rows is not None else None
        if rows is None:  # gathered in groups by context length: longest first
            singles.sort(key=lambda s: -s.num_computed_tokens)
        else:  # read from their kept rows: in row order
            singles.sort(key=lambda s: rows[s.seq_id])
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
        meta = AttentionMetadata(slot_mapping=slots[torch.tensor(seq_rows), pos], num_decode=len(singles))
        if rows is not None and singles:
            assert self.decode_rows is not None
            meta.rows = self.decode_rows.prepare(singles, slots[: len(singles)])
        elif singles:
            meta.decode_groups = self._decode_groups([s.num_computed_tokens + 1 for s in singles], tables)
        q_start = len(singles)
        for row, s in enumerate(ordered[len(singles) :], start=len(singles)):
            start, n = s.num_computed_tokens, s.num_scheduled_tokens
            context, causal = None, None
            if start:
                context = slots[row, : start + n]
                causal = torch.arange(start + n)[None, :] <= torch.arange(n)[:, None] + start
            meta.prefills.append(PrefillSegment(q_start, n, context, causal))
            q_start += n
        lora = LoraBatch.build(
            [s.lora for s in ordered], [s.num_scheduled_tokens for s in ordered], self.device
        )
        return torch.tensor(ids), pos, meta, sampled, torch.tensor(logit_rows, dtype=torch.long), lora

    def _decode_groups(self, contexts: list[int], tables: Tensor) -> list[DecodeGroup]:
        """Split the decode rows (longest context first) into groups of at most `group_tokens` padded tokens."""
        groups: list[DecodeGroup] = []
        start, bs, dtype = 0, self.block_size, self.cache.k.dtype
        while start < len(contexts):
            num_blocks = -(-contexts[start] // bs)  # the group's longest, in whole blocks
            ctx = num_blocks * bs
            end = min(len(contexts), start + max(1, self.group_tokens // ctx))
            mask = None
            if any(c != ctx for c in contexts[start:end]):
                lengths = torch.tensor(contexts[start:end])
                pad = torch.arange(ctx)[None, :] >= lengths[:, None]
                mask = torch.zeros(end - start, ctx, dtype=dtype).masked_fill_(pad, float("-inf"))
                mask = mask.view(end - start, 1, 1, ctx)
            groups.append(DecodeGroup(start, end, tables[start:end, :num_blocks].flatten(), ctx, mask))
            start = end
        return groups

    def _to_device(self, meta: AttentionMetadata) -> AttentionMetadata:
        d = self.device
        if d.type == "cpu":
            return meta
        meta.slot_mapping = meta.slot_mapping.to(d)
        for g in meta.decode_groups:
            g.blocks = g.blocks.to(d)
            g.mask = None if g.mask is None else g.mask.to(d)
        for seg in meta.prefills:
            seg.context_slots = None if seg.context_slots is None else seg.context_slots.to(d)
            seg.causal_mask = None if seg.causal_mask is None else seg.causal_mask.to(d)
        return meta

    @torch.inference_mode()
    def run(self, seqs: list[Sequence]) -> tuple[list[Sequence], Tensor]:
        """One forward pass; returns the sequences that reached their last token and their logits (fp32)."""
        ids, positions, meta, sampled, rows, lora = self.prepare(seqs)
        meta = self._to_device(meta)
        hidden = self.model.forward(ids.to(self.device), positions.to(self.device), self.cache, meta, lora)
        if any(s.params.prompt_logprobs is not None for s in seqs):
            self._prompt_logprobs(seqs, meta, hidden)
        if not sampled:
            return sampled, hidden.new_empty((0, self.model.vocab_size), dtype=torch.float32)
        logits = self.model.logits(hidden[rows.to(self.device)])
        return sampled, logits.float()

    def _prompt_logprobs(self, seqs: list[Sequence], meta: AttentionMetadata, hidden: Tensor) -> None:
        """Record, for prefilling sequences that asked, each prompt token's logprob given those before it."""
        prefilling = [s for s in seqs if s.num_scheduled_tokens > 1]
        for seq, seg in zip(prefilling, meta.prefills, strict=True):
            top = seq.params.prompt_logprobs
            start = seq.num_computed_tokens
            # position p predicts token p + 1; keep those not recorded yet (a preempted sequence recomputes)
            first = max(start, len(seq.prompt_logprobs) - 1)
            last = min(start + seq.num_scheduled_tokens, seq.num_prompt_tokens - 1)
            if top is None or first >= last:
                continue
            rows = torch.arange(seg.q_start + first - start, seg.q_start + last - start, device=hidden.device)
            logp = self.model.logits(hidden[rows]).float().log_softmax(dim=-1)
            targets = torch.tensor(seq.token_ids[first + 1 : last + 1], device=hidden.device)
            chosen = logp.gather(1, targets[:, None])[:, 0].tolist()
            values, ids = logp.topk(top, dim=-1) if top else (logp[:, :0], logp[:, :0].long())
            for j, token in enumerate(targets.tolist()):
                pairs = list(zip(ids[j].tolist(), values[j].tolist(), strict=True))
                seq.prompt_logprobs.append((token, chosen[j], pairs))
