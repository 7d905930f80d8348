"""Decoding sequences' K/V kept contiguous between steps, so decode attention reads them in place.

The paged cache scatters a sequence's context over blocks, so decode attention used to gather
every decoding sequence's whole context, for every layer, into a workspace each step: a read and
a write of all of it before attention read it again, to add one token. Here each decoding
sequence owns a row of `[layers, rows, kv_heads, context, head_dim]` (K and V), filled from the
paged cache once when it starts decoding; each step then writes its new token's K/V into its row
beside the paged cache, and attention reads the rows as strided views. The paged cache stays the
source of truth (prefill, prefix caching, preemption): a row is dropped as soon as its sequence
is not decoding in a step and refilled from the cache if it decodes again. Freed rows are reused
by the next new sequence. Attention reads the rows in `corral.engine.kernels.attend` (fp32 and bf16
where numba is installed), each row to its own length; otherwise in groups of `group_rows`, each
padded to its longest under a mask.

The price is memory: the rows grow to the batch's high-water mark (rows x longest context), at
most `max_bytes`; a step that would need more falls back to the gather (`DecodeGroup`). The context
grows at once to the longest its sequences may reach (prompt + max_tokens), as far as `max_bytes`
allows: each growth copies every row, and growing 64 tokens at a time took about 30 ms a step of
GPT-2's batch-32 decode (two ~0.6 s copies of 0.9 GB in 128 steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from corral.engine import kernels
from corral.engine.attention import KVCache
from corral.engine.sequence import Sequence

ROW_STEP, CONTEXT_STEP = 8, 64  # growth granularity: rows, context tokens


@dataclass
class RowGroup:
    """Rows [start, end) attended in one call, padded to `ctx` tokens."""

    start: int
    end: int
    ctx: int
    mask: Tensor | None  # [end - start, 1, 1, ctx] additive, None when no row is padded


@dataclass
class RowsStep:
    """This step's decode rows: where each query's K/V row is and how the rows are attended."""

    k: Tensor  # [layers, rows, kv_heads, context, head_dim]
    v: Tensor
    rows: Tensor  # [num_decode] the row of each decode query (ascending, the batch's decode order)
    positions: Tensor  # [num_decode] the position its new token takes
    num_rows: int  # rows attended (free rows below the highest in use are attended and ignored)
    groups: list[RowGroup]  # empty when `lengths` is set
    dense: bool  # rows == arange(num_rows): queries map to rows without a scatter
    # [num_rows] each row's context (0: a free row) when attention runs in the row kernel
    # (corral.engine.kernels), which reads each row to its own length: no groups, no padding
    lengths: np.ndarray | None = None


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


class DecodeRows:
    def __init__(self, cache: KVCache, max_bytes: int, group_rows: int = 8, kernel: bool = True) -> None:
        self.cache = cache
        self.max_bytes = max_bytes
        self.group_rows = group_rows
        # attend in the row kernel where it serves this dtype (numba installed), else padded groups
        self.kernel = kernel and kernels.available(cache.k.dtype, cache.k.device)
        layers, _, kv_heads, head_dim = cache.k.shape
        # head-major: each (row, head) context is one contiguous run that attention streams through.
        # Token-major (as the paged cache), attention read one head's 256 bytes of every 3 KiB
        # GPT-2 token row from memory: the README benchmark ran at 60 tok/s against the gather's
        # 200 (one loaded run, 2 threads); head-major, a step took 0.91x the gather's time
        self.k = cache.k.new_zeros((layers, 0, kv_heads, 0, head_dim))
        self.v = torch.zeros_like(self.k)
        self.row_of: dict[int, int] = {}  # seq_id -> row
        self.filled: dict[int, int] = {}  # seq_id -> tokens of its context in its row

    def _bytes(self, rows: int, ctx: int) -> int:
        layers, _, kv_heads, _, head_dim = self.k.shape
        return 2 * layers * rows * ctx * kv_heads * head_dim * self.k.element_size()

    def drop_all(self) -> None:
        self.row_of.clear()
        self.filled.clear()

    def assign(self, seqs: list[Sequence]) -> dict[int, int] | None:
        """Rows for this step's decodes (dropping the rows of sequences not among them); None when
        they do not fit in `max_bytes` (then every row is dropped and the step gathers instead)."""
        live = {s.seq_id for s in seqs}
        for seq_id in [i for i in self.row_of if i not in live]:
            del self.row_of[seq_id]
            self.filled.pop(seq_id, None)
        taken = set(self.row_of.values())
        free = (r for r in range(len(seqs) + len(taken)) if r not in taken)
        # newcomers longest first into the lowest free rows: neighbours (one attention group) then have
        # similar contexts, and a group pads less to its longest (every sequence grows one a step)
        newcomers = [s for s in seqs if s.seq_id not in self.row_of]
        for s in sorted(newcomers, key=lambda s: -s.num_computed_tokens):
            self.row_of[s.seq_id] = next(free)
        if not seqs:
            return {}
        rows = max(self.row_of.values()) + 1
        ctx = max(s.num_computed_tokens for s in seqs) + 1
        have_rows, have_ctx = self.k.shape[1], self.k.shape[3]
        if rows > have_rows or ctx > have_ctx:
            need_rows, need_ctx = _round_up(rows, ROW_STEP), _round_up(ctx, CONTEXT_STEP)
            if self._bytes(need_rows, need_ctx) > self.max_bytes:
                self.drop_all()
                return None
            # room for the longest these sequences may become, as far as it fits beside the rows in
            # use (context planned ahead is given back before rows are refused)
            planned = _round_up(max(s.num_prompt_tokens + s.params.max_tokens for s in seqs), CONTEXT_STEP)
            fits = self.max_bytes // self._bytes(need_rows, CONTEXT_STEP) * CONTEXT_STEP
            new_ctx = min(max(have_ctx, need_ctx, planned), fits)
            # and rows ahead: a batch filling up grew its rows a few times, each growth copying every
            # row (0.45 s of the README benchmark's first batch for 16 -> 32 GPT-2 rows). The row
            # kernel never reads a row past its length, so every row that fits is taken at once (memory
            # not yet written costs nothing); the padded groups read zeros, so rows there double
            rows_fit = self.max_bytes // self._bytes(ROW_STEP, new_ctx) * ROW_STEP
            ahead = rows_fit if self.kernel else 2 * have_rows
            self._grow(max(need_rows, min(ahead, rows_fit)), new_ctx)
        return self.row_of

    def _grow(self, rows: int, ctx: int) -> None:
        """New buffers (more rows; a longer context, or a shorter one that still holds every filled
        token) with the filled part of the old rows copied in, each byte written once. For the
        padded SDPA groups everything else is zeroed (padding is read under a -inf mask, so it must
        hold no NaN); the row kernel reads no padding, and a buffer left unwritten costs no memory
        until a row fills it."""
        layers, old_rows, kv_heads, old_ctx, head_dim = self.k.shape
        kept = min(old_ctx, ctx, max(self.filled.values(), default=0))
        kept_rows = min(old_rows, rows, max(self.row_of.values(), default=-1) + 1)  # the rows in use
        shape = (layers, rows, kv_heads, ctx, head_dim)
        for name in ("k", "v"):
            old, new = getattr(self, name), self.k.new_empty(shape)
            new[:, :kept_rows, :, :kept] = old[:, :kept_rows, :, :kept]
            if not self.kernel:
                new[:, :kept_rows, :, kept:].zero_()
                new[:, kept_rows:].zero_()
            setattr(self, name, new)

    def prepare(self, seqs: list[Sequence], slots: Tensor) -> RowsStep:
        """Fill what each row lacks from the paged cache and lay out this step's attention.

        seqs: the decodes in ascending row order (after `assign`); slots: their [seqs, positions]
        cache slots, row i for seqs[i]."""
        rows = [self.row_of[s.seq_id] for s in seqs]
        positions = [s.num_computed_tokens for s in seqs]
        for i, (s, row, pos) in enumerate(zip(seqs, rows, positions, strict=True)):
            have = self.filled.get(s.seq_id, 0)
            if have > pos:  # cannot happen without a recompute; start the row over
                have = 0
            if have < pos:
                where = slots[i, have:pos]
                self.k[:, row, :, have:pos] = self.cache.k.index_select(1, where).transpose(1, 2)
                self.v[:, row, :, have:pos] = self.cache.v.index_select(1, where).transpose(1, 2)
            self.filled[s.seq_id] = pos + 1  # this step writes position `pos`
        num_rows = rows[-1] + 1
        step = RowsStep(
            self.k, self.v, torch.tensor(rows), torch.tensor(positions), num_rows, [], num_rows == len(rows)
        )
        if self.kernel:
            step.lengths = np.zeros(num_rows, dtype=np.int64)
            step.lengths[rows] = np.asarray(positions) + 1
        else:
            step.groups = self._groups(rows, positions, num_rows)
        return step

    def _groups(self, rows: list[int], positions: list[int], num_rows: int) -> list[RowGroup]:
        """Rows in runs of `group_rows`, each padded (under a mask) to its longest context."""
        lengths = [1] * num_rows  # a free row attends to one (ignored) token, never to nothing
        for row, pos in zip(rows, positions, strict=True):
            lengths[row] = pos + 1
        groups = []
        for start in range(0, num_rows, self.group_rows):
            end = min(num_rows, start + self.group_rows)
            part = lengths[start:end]
            ctx = max(part)
            mask = None
            if any(n != ctx for n in part):
                pad = torch.arange(ctx)[None, :] >= torch.tensor(part)[:, None]
                mask = torch.zeros(end - start, ctx, dtype=self.k.dtype).masked_fill_(pad, float("-inf"))
                mask = mask.view(end - start, 1, 1, ctx)
            groups.append(RowGroup(start, end, ctx, mask))
        return groups
