"""Block manager: allocation, reference counts, prefix caching and LRU reuse, without a model."""

from __future__ import annotations

import pytest

from corral.engine.block_manager import BlockManager, block_hash
from corral.engine.sequence import SamplingParams, Sequence


def seq(tokens: list[int], block_size: int = 4) -> Sequence:
    return Sequence(tokens, SamplingParams(), block_size)


def computed(bm: BlockManager, s: Sequence) -> None:
    """Pretend the whole sequence was run through the model."""
    s.num_computed_tokens = len(s)
    bm.publish_computed(s)


def test_allocate_gives_enough_blocks_and_free_returns_them() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    s = seq(list(range(10)))
    assert bm.can_allocate(s)
    bm.allocate(s)
    assert len(s.block_table) == 3
    assert bm.num_free_blocks == 5
    bm.free(s)
    assert bm.num_free_blocks == 8 and s.block_table == []


def test_cannot_allocate_more_blocks_than_free() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    assert not bm.can_allocate(seq(list(range(9))))


def test_hash_chains_over_the_previous_block() -> None:
    a = block_hash([1, 2, 3, 4], None)
    assert block_hash([1, 2, 3, 4], a) != a
    assert block_hash([5, 6, 7, 8], a) != block_hash([5, 6, 7, 8], None)


def test_shared_prefix_reuses_computed_blocks_with_ref_counts() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    first = seq(list(range(10)))
    bm.allocate(first)
    computed(bm, first)
    second = seq(list(range(8)) + [99, 98, 97])
    bm.allocate(second)
    assert second.block_table[:2] == first.block_table[:2]
    assert second.num_cached_tokens == 8 and second.num_computed_tokens == 8
    assert bm.blocks[first.block_table[0]].ref_count == 2
    bm.free(first)
    assert bm.blocks[second.block_table[0]].ref_count == 1


def test_blocks_are_not_shared_before_they_are_computed() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    first = seq(list(range(10)))
    bm.allocate(first)
    second = seq(list(range(10)))
    bm.allocate(second)
    assert second.num_cached_tokens == 0
    assert not set(first.block_table) & set(second.block_table)


def test_a_fully_cached_prompt_still_computes_its_last_token() -> None:
    bm = BlockManager(num_blocks=8, block_size=4)
    first = seq(list(range(8)))
    bm.allocate(first)
    computed(bm, first)
    bm.free(first)
    again = seq(list(range(8)))
    bm.allocate(again)
    assert again.num_cached_tokens == 4  # the last block is recomputed so there are logits to sample
    assert len(again) - again.num_computed_tokens >= 1


def test_freed_blocks_stay_cached_until_reused_least_recent_first() -> None:
    bm = BlockManager(num_blocks=4, block_size=2)
    a = seq([1, 2, 3, 4, 5], 2)
    bm.allocate(a)
    computed(bm, a)
    bm.free(a)
    assert bm.num_free_blocks == 4
    hit = seq([1, 2, 3, 4, 9], 2)
    assert bm.can_allocate(hit)
    bm.allocate(hit)
    assert hit.num_cached_tokens == 4
    bm.free(hit)
    filler = seq([7] * 8, 2)  # needs every block: evicts the cached ones
    bm.allocate(filler)
    assert bm.hash_to_block == {}
    bm.free(filler)
    miss = seq([1, 2, 3, 4, 9], 2)
    bm.allocate(miss)
    assert miss.num_cached_tokens == 0


def test_append_slot_adds_a_block_only_at_a_boundary() -> None:
    bm = BlockManager(num_blocks=4, block_size=4)
    s = seq([1, 2, 3, 4])
    bm.allocate(s)
    s.append_token(5)
    assert bm.can_append(s)
    bm.append_slot(s)
    assert len(s.block_table) == 2
    s.append_token(6)
    bm.append_slot(s)
    assert len(s.block_table) == 2


def test_prefix_caching_can_be_disabled() -> None:
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    first = seq(list(range(9)))
    bm.allocate(first)
    computed(bm, first)
    second = seq(list(range(9)))
    bm.allocate(second)
    assert second.num_cached_tokens == 0


def test_double_free_is_caught() -> None:
    bm = BlockManager(num_blocks=2, block_size=4)
    s = seq([1, 2])
    bm.allocate(s)
    table = list(s.block_table)
    bm.free(s)
    s.block_table = table
    with pytest.raises(AssertionError):
        bm.free(s)
