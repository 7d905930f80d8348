"""Attention over the paged KV cache, shared by every model family.

The cache of one layer is `[slots, kv_heads, head_dim]` for K and for V, where a slot is
`block_id * block_size + offset`. Each step writes the new tokens' K/V into their slots in place,
then reads each sequence's context back by slot index. A slot is one contiguous row, so the read
is a row gather at memory-copy speed (per-head rows were 5x slower), and attention takes the
gathered rows as a strided view. Single-token queries (decodes) are batched into one padded call
with a kv head's query group as the query rows (grouped-query attention without repeating K/V);
longer queries (prefill chunks) are attended one sequence at a time with a causal mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PrefillSegment:
    q_start: int  # first row of this sequence's queries in the flattened batch
    q_len: int
    context_slots: Tensor  # [context_len] cache slots of every token up to the last query
    causal_mask: Tensor | None  # [q_len, context_len] bool, None when context_len == q_len


@dataclass
class AttentionMetadata:
    """Where this step's tokens go in the cache and what each query attends to."""

    slot_mapping: Tensor  # [num_tokens]
    num_decode: int = 0  # the first num_decode rows are single-token queries
    decode_slots: Tensor | None = None  # [num_decode, max_context] (padding points at slot 0)
    decode_mask: Tensor | None = None  # [num_decode, 1, 1, max_context] additive, or None if unpadded
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
        shape = (num_layers, num_blocks * block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    @staticmethod
    def bytes_per_block(
        num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * num_kv_heads * head_dim * block_size * itemsize


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
    b = meta.num_decode
    if b:
        assert meta.decode_slots is not None
        ctx = meta.decode_slots.shape[1]
        flat = meta.decode_slots.reshape(-1)
        # whole-token rows are gathered (fast), then viewed as [batch, kv_heads, ctx, dim] without a copy
        kk = k_cache.index_select(0, flat).view(b, ctx, kv_heads, head_dim).transpose(1, 2)
        vv = v_cache.index_select(0, flat).view(b, ctx, kv_heads, head_dim).transpose(1, 2)
        qq = q[:b].reshape(b, kv_heads, num_heads // kv_heads, head_dim)  # a kv head's query group as rows
        o = F.scaled_dot_product_attention(qq, kk, vv, attn_mask=meta.decode_mask, scale=scale)
        out[:b] = o.reshape(b, num_heads, head_dim)
    for seg in meta.prefills:
        kk = k_cache.index_select(0, seg.context_slots).transpose(0, 1)
        vv = v_cache.index_select(0, seg.context_slots).transpose(0, 1)
        qq = q[seg.q_start : seg.q_start + seg.q_len].transpose(0, 1)
        o = F.scaled_dot_product_attention(
            qq,
            kk,
            vv,
            attn_mask=seg.causal_mask,
            is_causal=seg.causal_mask is None,
            scale=scale,
            enable_gqa=kv_heads != num_heads,
        )
        out[seg.q_start : seg.q_start + seg.q_len] = o.transpose(0, 1)
    return out
