"""Scheduler: continuous batching decisions as plain data, driven by a fake model that emits token 7."""

from __future__ import annotations

from corral.engine.block_manager import BlockManager
from corral.engine.scheduler import Scheduler, SchedulerOutput
from corral.engine.sequence import SamplingParams, Sequence, SequenceStatus


def make(num_blocks: int = 16, block_size: int = 4, **kw: int) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, block_size), **kw)


def request(sched: Scheduler, prompt_len: int, max_tokens: int = 4, first: int = 1) -> Sequence:
    s = Sequence(
        list(range(first, first + prompt_len)),
        SamplingParams(max_tokens=max_tokens),
        sched.block_manager.block_size,
    )
    sched.add(s)
    return s


def fake_step(sched: Scheduler) -> SchedulerOutput:
    """What the engine does around the forward pass, with every sampled token = 7."""
    out = sched.schedule()
    sched.advance(out)
    for s in out.seqs:
        if s.num_computed_tokens == len(s):
            s.append_token(7)
            if s.num_output_tokens >= s.params.max_tokens:
                s.finish("length")
    sched.release_finished(out)
    return out


def run_all(sched: Scheduler, limit: int = 1000) -> int:
    steps = 0
    while sched.has_work():
        fake_step(sched)
        steps += 1
        assert steps < limit, "the scheduler stopped making progress"
    return steps


def test_admits_waiting_requests_up_to_max_num_seqs() -> None:
    sched = make(max_num_seqs=2)
    a, b, c = (request(sched, 3) for _ in range(3))
    out = sched.schedule()
    assert out.seqs == [a, b]
    assert c.status is SequenceStatus.WAITING


def test_mixes_decodes_and_a_new_prefill_in_one_step() -> None:
    sched = make()
    first = request(sched, 5)
    fake_step(sched)
    second = request(sched, 6, first=100)  # no shared prefix
    out = fake_step(sched)
    assert [(s, s.num_scheduled_tokens) for s in out.seqs] == [(first, 1), (second, 6)]


def test_long_prompts_are_prefilled_in_chunks_within_the_token_budget() -> None:
    sched = make(num_blocks=32, max_num_batched_tokens=16)
    s = request(sched, 40, max_tokens=1)
    chunks = [fake_step(sched).num_tokens for _ in range(3)]
    assert chunks == [16, 16, 8]
    assert s.is_finished


def test_out_of_blocks_preempts_the_newest_and_requeues_it_first() -> None:
    sched = make(num_blocks=4, block_size=4)
    old = request(sched, 4, max_tokens=8)
    new = request(sched, 4, max_tokens=8)
    fake_step(sched)  # both prefilled: two blocks each would be needed after 4 more tokens
    preempted: list[Sequence] = []
    for _ in range(6):
        preempted += fake_step(sched).preempted
    assert preempted and preempted[0] is new
    assert sched.num_preemptions >= 1
    run_all(sched)
    assert old.is_finished and new.is_finished
    assert old.num_output_tokens == new.num_output_tokens == 8
    assert sched.block_manager.num_used_blocks == 0


def test_a_large_request_at_the_head_is_not_overtaken_forever() -> None:
    sched = make(num_blocks=6, block_size=4)
    runners = [request(sched, 4, max_tokens=6) for _ in range(2)]
    fake_step(sched)
    big = request(sched, 16, max_tokens=2)
    small = request(sched, 2, max_tokens=2)
    out = fake_step(sched)
    assert big not in out.seqs and small not in out.seqs  # FCFS: small waits behind big
    run_all(sched)
    assert all(s.is_finished for s in [*runners, big, small])
    assert sched.block_manager.num_used_blocks == 0


def test_many_requests_under_pressure_all_finish_without_leaks() -> None:
    sched = make(num_blocks=10, block_size=4, max_num_seqs=8, max_num_batched_tokens=24)
    seqs = [request(sched, 3 + i % 9, max_tokens=2 + i % 7) for i in range(40)]
    run_all(sched)
    assert all(s.is_finished and s.num_output_tokens == s.params.max_tokens for s in seqs)
    assert sched.block_manager.num_used_blocks == 0


def test_abort_frees_blocks_of_running_and_waiting_sequences() -> None:
    sched = make(num_blocks=8)
    running = request(sched, 8)
    fake_step(sched)
    waiting = request(sched, 30)
    assert sched.block_manager.num_used_blocks > 0
    sched.abort(running)
    sched.abort(waiting)
    assert sched.block_manager.num_used_blocks == 0
    assert not sched.has_work()
    assert running.finish_reason == "abort"
