"""Decode rows: one row per decoding sequence, reused when freed, filled from the paged cache."""

from __future__ import annotations

import torch

from corral.engine.attention import KVCache
from corral.engine.decode_rows import DecodeRows
from corral.engine.sequence import SamplingParams, Sequence


def decoding(length: int) -> Sequence:
    seq = Sequence(list(range(length)), SamplingParams(), block_size=4)
    seq.num_computed_tokens = length - 1  # the last token is this step's query
    return seq


def cache() -> KVCache:
    kv = KVCache(2, 1, 2, 16, 4, torch.float32, torch.device("cpu"))
    kv.k.copy_(torch.arange(kv.k.numel(), dtype=torch.float32).view(kv.k.shape))
    kv.v.copy_(-kv.k)
    return kv


def test_rows_are_kept_dropped_and_reused() -> None:
    rows = DecodeRows(cache(), max_bytes=1 << 20)
    a, b, c = decoding(5), decoding(9), decoding(3)
    assert rows.assign([a, b]) == {a.seq_id: 0, b.seq_id: 1}
    assert rows.assign([b, c]) == {b.seq_id: 1, c.seq_id: 0}  # a left: its row goes to c
    assert rows.assign([b]) == {b.seq_id: 1}
    assert rows.assign([]) == {}


def test_rows_are_filled_from_the_paged_cache_once_and_masked_to_each_length() -> None:
    kv = cache()
    rows = DecodeRows(kv, max_bytes=1 << 20, group_rows=2)
    short, long = decoding(3), decoding(7)
    rows.assign([short, long])
    slots = torch.tensor([[8, 9, 10, 11, 0, 0, 0, 0], [4, 5, 6, 7, 12, 13, 14, 15]])
    step = rows.prepare([short, long], slots)
    assert torch.equal(rows.k[:, 0, :, :2], kv.k[:, [8, 9]].transpose(1, 2))
    assert torch.equal(rows.v[:, 1, :, :6], kv.v[:, [4, 5, 6, 7, 12, 13]].transpose(1, 2))
    assert step.dense and step.positions.tolist() == [2, 6]
    [group] = step.groups
    assert group.ctx == 7 and group.mask is not None
    assert torch.isinf(group.mask[0, 0, 0, 3:]).all() and not torch.isinf(group.mask[0, 0, 0, :3]).any()
    assert group.mask[1].eq(0).all()
    assert rows.filled == {short.seq_id: 3, long.seq_id: 7}


def test_rows_that_do_not_fit_fall_back_to_the_gather() -> None:
    rows = DecodeRows(cache(), max_bytes=1024)
    assert rows.assign([decoding(5)]) is None  # 8 rows x 64 tokens would not fit
    assert not rows.row_of
