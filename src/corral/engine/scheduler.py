"""Which sequences run each step: continuous batching over a token budget, preempting by recompute.

Every step first gives each running sequence its next token (decode), then continues chunked
prefills, then admits waiting sequences first come, first served while blocks and budget last.
A decode that finds no free block preempts the most recently admitted sequence: its blocks are
freed and it goes back to the head of the queue to be recomputed later (its finished blocks stay
in the prefix cache, so the recompute is often cheap). FCFS admission plus head-of-queue
preemption means no request waits forever behind later ones.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from corral.engine.block_manager import BlockManager
from corral.engine.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    """The sequences to run this step; each has `num_scheduled_tokens` set."""

    seqs: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_scheduled_tokens for s in self.seqs)

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int = 4096,
        watermark: float = 0.01,
    ) -> None:
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.watermark_blocks = max(1, int(watermark * block_manager.num_blocks))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence wherever it is and free its blocks."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        if seq.block_table:
            self.block_manager.free(seq)
        if not seq.is_finished:
            seq.finish("abort")

    def _preempt(self, victim: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(victim)
        self.block_manager.free(victim)
        victim.status = SequenceStatus.WAITING
        victim.num_cached_tokens = 0
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)
        out.preempted.append(victim)

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        bm = self.block_manager
        decodes = [s for s in self.running if not s.is_prefill]
        prefills = [s for s in self.running if s.is_prefill]
        for seq in decodes:
            if budget < 1 or seq not in self.running:
                continue
            while not bm.can_append(seq):
                self._preempt(self.running[-1], out)
                if seq not in self.running:
                    break
            else:
                bm.append_slot(seq)
                seq.num_scheduled_tokens = 1
                out.seqs.append(seq)
                budget -= 1
        for seq in prefills:
            if budget < 1 or seq not in self.running:
                continue
            seq.num_scheduled_tokens = min(len(seq) - seq.num_computed_tokens, budget)
            out.seqs.append(seq)
            budget -= seq.num_scheduled_tokens
        return budget

    def _can_admit(self, seq: Sequence) -> bool:
        bm = self.block_manager
        if not bm.can_allocate(seq):
            return False
        # Keep a few blocks back for running decodes, unless the cache is idle.
        return not self.running or bm.num_free_blocks - seq.num_blocks >= self.watermark_blocks

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        for seq in self.running:
            seq.num_scheduled_tokens = 0
        budget = self._schedule_running(out, self.max_num_batched_tokens)
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq in out.preempted or not self._can_admit(seq):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq)
            seq.status = SequenceStatus.RUNNING
            seq.num_scheduled_tokens = min(len(seq) - seq.num_computed_tokens, budget)
            self.running.append(seq)
            out.seqs.append(seq)
            budget -= seq.num_scheduled_tokens
        return out

    def advance(self, out: SchedulerOutput) -> None:
        """After the forward pass: count the computed tokens and publish newly full blocks."""
        for seq in out.seqs:
            if not seq.is_finished:
                seq.num_computed_tokens += seq.num_scheduled_tokens
                self.block_manager.publish_computed(seq)

    def release_finished(self, out: SchedulerOutput) -> None:
        """After sampling: free the blocks of sequences that just finished."""
        for seq in out.seqs:
            if seq.is_finished and seq in self.running:
                self.running.remove(seq)
                self.block_manager.free(seq)
