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
    assert rows.assign([a, b]) == {b.seq_id: 0, a.seq_id: 1}  # longest first
    assert rows.assign([b, c]) == {b.seq_id: 0, c.seq_id: 1}  # a left: its row goes to c
    assert rows.assign([c]) == {c.seq_id: 1}
    assert rows.assign([]) == {}


def test_rows_are_filled_from_the_paged_cache_once_and_masked_to_each_length() -> None:
    kv = cache()
    rows = DecodeRows(kv, max_bytes=1 << 20, group_rows=2, kernel=False)
    short, long = decoding(3), decoding(7)
    assert rows.assign([short, long]) == {long.seq_id: 0, short.seq_id: 1}
    slots = torch.tensor([[4, 5, 6, 7, 12, 13, 14, 15], [8, 9, 10, 11, 0, 0, 0, 0]])
    step = rows.prepare([long, short], slots)
    assert torch.equal(rows.k[:, 1, :, :2], kv.k[:, [8, 9]].transpose(1, 2))
    assert torch.equal(rows.v[:, 0, :, :6], kv.v[:, [4, 5, 6, 7, 12, 13]].transpose(1, 2))
    assert step.dense and step.positions.tolist() == [6, 2]
    [group] = step.groups
    assert group.ctx == 7 and group.mask is not None
    assert torch.isinf(group.mask[1, 0, 0, 3:]).all() and not torch.isinf(group.mask[1, 0, 0, :3]).any()
    assert group.mask[0].eq(0).all()
    assert rows.filled == {short.seq_id: 3, long.seq_id: 7}
    assert step.lengths is None


def test_the_row_kernel_reads_each_row_to_its_length_and_takes_rows_ahead() -> None:
    kv = cache()
    rows = DecodeRows(kv, max_bytes=1 << 20)
    assert rows.kernel  # numba is part of the engine extra
    short, long = decoding(3), decoding(7)
    rows.assign([short, long])
    assert rows.k.shape[1] == (1 << 20) // (32 * 64) // 8 * 8  # every row that fits at 64 tokens
    step = rows.prepare(
        [long, short], torch.tensor([[4, 5, 6, 7, 12, 13, 14, 15], [8, 9, 10, 11, 0, 0, 0, 0]])
    )
    assert step.groups == [] and step.lengths is not None and step.lengths.tolist() == [7, 3]
    assert torch.equal(rows.k[:, 1, :, :2], kv.k[:, [8, 9]].transpose(1, 2))
    rows.assign([short])  # row 0 freed: attended with length 0
    step = rows.prepare([short], torch.tensor([[8, 9, 10, 11]]))
    assert step.lengths is not None and step.lengths.tolist() == [0, 3] and not step.dense


def test_rows_that_do_not_fit_fall_back_to_the_gather() -> None:
    rows = DecodeRows(cache(), max_bytes=1024)
    assert rows.assign([decoding(5)]) is None  # 8 rows x 64 tokens would not fit
    assert not rows.row_of


def test_the_context_grows_once_to_the_longest_the_sequences_may_become() -> None:
    # bytes per row-token here: 2 (k, v) x 2 layers x 1 head x 2 dims x 4 bytes = 32; 8 rows = 256
    rows = DecodeRows(cache(), max_bytes=256 * 192, kernel=False)
    seq = Sequence(list(range(5)), SamplingParams(max_tokens=100), block_size=4)
    seq.num_computed_tokens = 4
    rows.assign([seq])
    assert rows.k.shape[3] == 128  # prompt 5 + 100 new, in whole 64-token steps: no growth per 64 tokens
    rows.k[:, 0, :, :5] = 7.0
    rows.filled[seq.seq_id] = 5  # as prepare() records it: the filled part is what a growth keeps
    seq.num_computed_tokens = 150  # past its plan (a recompute, say): grows again, in 64-token steps
    rows.assign([seq])
    assert rows.k.shape[3] == 192
    assert rows.k[:, 0, :, :5].eq(7.0).all() and rows.k[:, 0, :, 5:].eq(0).all() and rows.k[:, 1:].eq(0).all()
    capped = DecodeRows(cache(), max_bytes=256 * 64, kernel=False)
    capped.assign([Sequence(list(range(5)), SamplingParams(max_tokens=1000), block_size=4)])
    assert capped.k.shape[3] == 64  # the plan is cut to what max_bytes allows


def test_context_planned_ahead_is_given_back_before_new_rows_are_refused() -> None:
    rows = DecodeRows(cache(), max_bytes=256 * 192, kernel=False)  # 8 rows x 192 tokens, or 16 x 96
    first = Sequence(list(range(5)), SamplingParams(max_tokens=1000), block_size=4)
    first.num_computed_tokens = 4
    rows.assign([first])
    assert rows.k.shape[1:4:2] == (8, 192)  # planned as far as 8 rows allow
    rows.k[:, 0, :, :5] = 3.0
    rows.filled[first.seq_id] = 5
    others = [decoding(5) for _ in range(8)]
    assert rows.assign([first, *others]) is not None  # a 9th row: 16 rows of 64 tokens, not the gather
    assert rows.k.shape[1:4:2] == (16, 64)
    assert rows.k[:, 0, :, :5].eq(3.0).all() and rows.k[:, 0, :, 5:].eq(0).all()


def test_newcomers_take_free_rows_longest_first() -> None:
    rows = DecodeRows(cache(), max_bytes=1 << 20)
    short, long, middle = decoding(3), decoding(9), decoding(5)
    assert rows.assign([short, long, middle]) == {long.seq_id: 0, middle.seq_id: 1, short.seq_id: 2}
    later = decoding(20)
    assert rows.assign([long, later]) == {long.seq_id: 0, later.seq_id: 1}  # the lowest free row
