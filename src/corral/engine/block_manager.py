"""Fixed-size KV cache blocks: allocation, reference counts and prefix caching by block hash.

A full block's hash chains over the previous block's hash and its own token ids, so equal hashes
mean equal prefixes. A block is published under its hash only once its K/V are computed; a freed
block keeps its hash and contents until it is reused, so a later request with the same prefix
(a shared system prompt, the next chat turn, a preempted sequence) skips recomputing it.
Free blocks are reused least recently freed first.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass

from corral.engine.sequence import Sequence


def block_hash(token_ids: list[int], prev_hash: int | None) -> int:
    """A 64-bit hash of one block's tokens chained over the previous block's hash."""
    h = hashlib.blake2b(digest_size=8)
    h.update(struct.pack("<q", -1 if prev_hash is None else prev_hash))
    h.update(struct.pack(f"<{len(token_ids)}i", *token_ids))
    return int.from_bytes(h.digest(), "little", signed=True)


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


class BlockManager:
    """Hands out KV blocks to sequences; `num_blocks * block_size` token slots in all."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.hash_to_block: dict[int, int] = {}
        # insertion order = LRU; an OrderedDict, since a plain dict's first key is found by scanning
        # past every key deleted before it (milliseconds per new block in a large cache)
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.num_cache_hits = 0  # prompt tokens served from the prefix cache, for metrics

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    # -- prefix cache -------------------------------------------------------------------------
    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding this sequence's leading full blocks, leaving at least one token to compute."""
        if not self.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            return []  # prompt logprobs need every prompt position computed
        hits: list[int] = []
        prev = seq.hash_seed
        for i in range((len(seq) - 1) // self.block_size):
            tokens = seq.block_tokens(i)
            h = block_hash(tokens, prev)
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tuple(tokens):
                break
            hits.append(block_id)
            prev = h
        return hits

    def _take_free(self) -> Block:
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return block

    def _share(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self._free[block_id]
        block.ref_count += 1

    # -- sequences ----------------------------------------------------------------------------
    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._cached_prefix(seq)
        in_use = sum(1 for b in hits if self.blocks[b].ref_count > 0)
        return seq.num_blocks - in_use <= self.num_free_blocks

    def allocate(self, seq: Sequence) -> None:
        """Give a waiting sequence blocks for all its tokens, reusing cached prefix blocks."""
        assert not seq.block_table, "sequence already has blocks"
        hits = self._cached_prefix(seq)
        for block_id in hits:
            self._share(block_id)
        seq.block_table = hits + [self._take_free().block_id for _ in range(seq.num_blocks - len(hits))]
        seq.num_cached_tokens = len(hits) * self.block_size
        seq.num_computed_tokens = seq.num_cached_tokens
        seq.block_hashes = []
        prev = seq.hash_seed
        for i in range(len(hits)):
            prev = block_hash(seq.block_tokens(i), prev)
            seq.block_hashes.append(prev)
        self.num_cache_hits += seq.num_cached_tokens

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; blocks nobody uses go back to the free list (still cached)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            assert block.ref_count >= 0, f"block {block_id} freed twice"
            if block.ref_count == 0:
                self._free[block_id] = None
        seq.block_table = []
        seq.block_hashes = []
        seq.num_computed_tokens = 0

    def can_append(self, seq: Sequence) -> bool:
        """Whether the next token of a running sequence has room (a new block only at a boundary)."""
        return len(seq.block_table) >= seq.num_blocks or self.num_free_blocks > 0

    def append_slot(self, seq: Sequence) -> None:
        if len(seq.block_table) < seq.num_blocks:
            seq.block_table.append(self._take_free().block_id)

    def publish_computed(self, seq: Sequence) -> None:
        """After a step: put the sequence's newly completed full blocks into the prefix cache."""
        if not self.enable_prefix_caching:
            return
        full = min(seq.num_computed_tokens, len(seq)) // self.block_size
        while len(seq.block_hashes) < full:
            i = len(seq.block_hashes)
            tokens = seq.block_tokens(i)
            h = block_hash(tokens, seq.block_hashes[-1] if seq.block_hashes else seq.hash_seed)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if h not in self.hash_to_block and block.hash is None:
                block.hash, block.token_ids = h, tuple(tokens)
                self.hash_to_block[h] = block.block_id

    def slot(self, seq: Sequence, position: int) -> int:
        """The flat cache slot holding the K/V of token `position` of `seq`."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
