"""Attention over the paged KV cache, shared by every model family.

The cache of one layer is `[slots, kv_heads, head_dim]` for K and for V, where a slot is
`block_id * block_size + offset`. Each step writes the new tokens' K/V into their slots in place,
then reads each sequence's context back by slot index. A slot is one contiguous row, so the read
is a row gather at memory-copy speed, and attention takes the gathered rows as a strided view.

Decodes (single-token queries) come sorted by context length and are attended in groups: each
group's context is gathered into a reused workspace small enough to stay in the CPU caches, then
one padded SDPA call covers the group (a kv head's query group as the query rows, so K/V are
never repeated for grouped-query attention). Gathering the whole batch at once would stream the
context through memory three times (read, write, read) in buffers the allocator hands back to the
OS every step. A prefill chunk with nothing before it attends to its own fresh K/V (no gather);
one that continues a cached prefix gathers its context and uses a causal mask.

On CPU, decodes usually skip the gather: each decoding sequence keeps its context in a contiguous
row between steps (`corral.engine.decode_rows`, `AttentionMetadata.rows`), read in place; the
gather groups are the fallback past the rows' memory cap and the path on accelerators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from corral.engine import kernels

if TYPE_CHECKING:
    from corral.engine.decode_rows import RowsStep


@dataclass
class DecodeGroup:
    """Consecutive decode rows attended together, padded to the group's longest context in blocks."""

    start: int  # first query row
    end: int
    blocks: Tensor  # [(end - start) * ctx / block_size] block ids, row by row (padding: block 0)
    ctx: int  # padded context length, a multiple of the block size
    mask: Tensor | None  # [end - start, 1, 1, ctx] additive, None when no row is padded


@dataclass
class PrefillSegment:
    q_start: int  # first row of this sequence's queries in the flattened batch
    q_len: int
    context_slots: Tensor | None  # [context_len] slots up to the last query; None: the chunk is all of it
    causal_mask: Tensor | None  # [q_len, context_len] bool, None when context_len == q_len


@dataclass
class AttentionMetadata:
    """Where this step's tokens go in the cache and what each query attends to."""

    slot_mapping: Tensor  # [num_tokens]
    num_decode: int = 0  # the first num_decode rows are single-token queries
    decode_groups: list[DecodeGroup] = field(default_factory=list)
    rows: RowsStep | None = None  # decodes read from their kept rows (corral.engine.decode_rows) instead
    prefills: list[PrefillSegment] = field(default_factory=list)


class KVCache:
    """K and V storage for every layer: `[layers, num_blocks * block_size, kv_heads, head_dim]`."""

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size = block_size
        # bf16/fp16 decode attention on CPU through torch's fused SDPA (True) or two bmm with a fp32
        # softmax (False); the model runner picks per CPU (see `_decode_attention_half`)
        self.fused_half_decode = False
        shape = (num_layers, num_blocks * block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        # reused gather buffers for decode groups, grown on demand: [blocks, block_size * kv_heads * head_dim]
        self._ws_k = torch.empty((0, block_size * num_kv_heads * head_dim), dtype=dtype, device=device)
        self._ws_v = torch.empty_like(self._ws_k)

    @staticmethod
    def bytes_per_block(
        num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * num_kv_heads * head_dim * block_size * itemsize

    def gather(self, layer: int, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """K and V of whole blocks, `[blocks * block_size, kv_heads, head_dim]` each, in the reused
        workspace (valid until the next call). Block rows are long, so this runs at copy speed."""
        n = blocks.shape[0]
        if n > self._ws_k.shape[0]:
            self._ws_k = self._ws_k.new_empty((n, self._ws_k.shape[1]))
            self._ws_v = torch.empty_like(self._ws_k)
        kk, vv = self._ws_k[:n], self._ws_v[:n]
        torch.index_select(self.k[layer].view(-1, kk.shape[1]), 0, blocks, out=kk)
        torch.index_select(self.v[layer].view(-1, vv.shape[1]), 0, blocks, out=vv)
        rows = (n * self.block_size, *self.k.shape[2:])
        return kk.view(rows), vv.view(rows)


def _decode_attention_half(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Decode attention in bf16/fp16 on CPU: two batched matmuls in the half dtype (fp32
    accumulation inside oneDNN), the softmax in fp32, as SDPA's math path computes it.

    On an AVX-512 BF16 CPU without AMX (AMD EPYC), torch's fused CPU SDPA in bf16 spent about 8x
    its fp32 time on these one-row queries (2.6 ms against 0.3 for 32 rows x 8 heads x 96 context,
    one thread); K and V made contiguous and put through two bmm took 0.35 ms. On a Xeon with AMX
    it is the other way round (fused SDPA 0.34 ms, this 1.1 ms), so there the fused kernel is used
    (`KVCache.fused_half_decode`). q: [b, kv_heads, group, dim]; k, v: [b, kv_heads, ctx, dim].
    """
    scores = torch.matmul(q, k.contiguous().transpose(-1, -2)).float()
    scores.mul_(scale)
    if mask is not None:
        scores.add_(mask)
    probs = torch.softmax(scores, dim=-1).to(q.dtype)
    return torch.matmul(probs, v.contiguous())


# rows x context up to which bf16/fp16 decode attention on CPU (no AMX) runs in fp32 instead: a few
# short rows cost the casts less than the half path's six small ops. Measured on an AVX-512 BF16 EPYC,
# 8 heads x 64, 2 threads: 1 row x 64 context 41 against 120 us, 2 x 256 110 against 187, 4 x 256
# 187 against 251, 8 x 64 145 against 219; 4 x 1024 (791 against 614) and 8 x 256 (489 against 300)
# are past it
SMALL_HALF_DECODE = 1024


def _decode_attention_upcast(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Decode attention for few, short rows in bf16/fp16: torch's fused fp32 SDPA on upcast copies."""
    mask = mask.float() if mask is not None and mask.is_floating_point() else mask
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale)
    return out.to(q.dtype)


def _attend_decode(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, cache: KVCache
) -> Tensor:
    """q: [b, kv_heads, group, dim]; k, v: [b, kv_heads, ctx, dim] (strided views)."""
    if q.device.type == "cpu" and q.dtype != torch.float32 and not cache.fused_half_decode:
        if q.shape[0] * k.shape[2] <= SMALL_HALF_DECODE:
            return _decode_attention_upcast(q, k, v, mask, scale)
        return _decode_attention_half(q, k, v, mask, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _decode_from_rows(
    q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: int, rows: RowsStep, scale: float
) -> Tensor:
    """Decode attention over the kept rows; q: [decodes, heads, dim], k, v: their new [decodes, kv_heads, dim]."""
    rk, rv = rows.k[layer], rows.v[layer]  # [rows, kv_heads, context, dim]
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = rk.shape[1]
    kernel = rows.lengths is not None  # the kernel stores the new K/V itself (at each row's length - 1)
    if not kernel:
        rk[rows.rows, :, rows.positions] = k
        rv[rows.rows, :, rows.positions] = v
    if not rows.dense:  # free rows in between: their queries are zeros, their outputs dropped
        q = q.new_zeros((rows.num_rows, num_heads, head_dim)).index_copy_(0, rows.rows, q)
        if kernel:
            k, v = (x.new_zeros((rows.num_rows, *x.shape[1:])).index_copy_(0, rows.rows, x) for x in (k, v))
    if kernel:
        assert rows.lengths is not None
        qq = q.reshape(rows.num_rows, kv_heads, num_heads // kv_heads, head_dim)
        out = kernels.attend(qq, rk, rv, k, v, rows.lengths, scale).reshape(q.shape)
        return out if rows.dense else out.index_select(0, rows.rows)
    out = torch.empty_like(q)
    for g in rows.groups:
        b = g.end - g.start
        kk, vv = rk[g.start : g.end, :, : g.ctx], rv[g.start : g.end, :, : g.ctx]
        qq = q[g.start : g.end].reshape(b, kv_heads, num_heads // kv_heads, head_dim)
        out[g.start : g.end] = _attend_decode(qq, kk, vv, g.mask, scale, cache).reshape(
            b, num_heads, head_dim
        )
    return out if rows.dense else out.index_select(0, rows.rows)


def paged_attention(
    q: Tensor, k: Tensor, v: Tensor, cache: KVCache, layer: int, meta: AttentionMetadata, scale: float
) -> Tensor:
    """q: [tokens, heads, dim]; k, v: [tokens, kv_heads, dim]. Returns [tokens, heads, dim]."""
    k_cache, v_cache = cache.k[layer], cache.v[layer]
    k_cache[meta.slot_mapping] = k
    v_cache[meta.slot_mapping] = v
    num_heads, head_dim = q.shape[1], q.shape[2]
    kv_heads = k_cache.shape[1]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if meta.rows is not None and meta.num_decode:
        nd = meta.num_decode
        out[:nd] = _decode_from_rows(q[:nd], k[:nd], v[:nd], cache, layer, meta.rows, scale)
    for g in meta.decode_groups:
        b = g.end - g.start
        kk, vv = cache.gather(layer, g.blocks)
        # viewed as [batch, kv_heads, ctx, dim] without a copy
        kk = kk.view(b, g.ctx, kv_heads, head_dim).transpose(1, 2)
        vv = vv.view(b, g.ctx, kv_heads, head_dim).transpose(1, 2)
        qq = q[g.start : g.end].reshape(b, kv_heads, num_heads // kv_heads, head_dim)
        o = _attend_decode(qq, kk, vv, g.mask, scale, cache)
        out[g.start : g.end] = o.reshape(b, num_heads, head_dim)
    for seg in meta.prefills:
        rows = slice(seg.q_start, seg.q_start + seg.q_len)
        if seg.context_slots is None:
            kk, vv = k[rows], v[rows]
        else:
            kk, vv = k_cache.index_select(0, seg.context_slots), v_cache.index_select(0, seg.context_slots)
        # 4-D inputs, so SDPA takes its fused CPU kernel rather than the unfused math path
        o = F.scaled_dot_product_attention(
            q[rows].transpose(0, 1)[None],
            kk.transpose(0, 1)[None],
            vv.transpose(0, 1)[None],
            attn_mask=seg.causal_mask,
            is_causal=seg.causal_mask is None,
            scale=scale,
            enable_gqa=kv_heads != num_heads,
        )
        out[rows] = o[0].transpose(0, 1)
    return out
