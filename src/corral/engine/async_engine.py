"""The asyncio front of the engine: one background loop steps the engine in a worker thread.

Requests and aborts are queued from the event loop and applied between steps, so the engine
itself is only ever touched by one step at a time and needs no locks. Each request gets an
asyncio queue of its outputs; leaving `generate` early (a client that disconnected) aborts the
sequence and frees its blocks.

The thread that steps the engine should be the one that loaded it (`engine_thread`): each thread
that runs torch's parallel ops gets its own OpenMP team, and with the model packed by one team and
stepped by another, batch-1 decode ran about 35% slower on a 2-core machine (the worker's steps ran
at 70-80 tokens/s against 120-130 in the loading thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

from corral.engine.llm_engine import LLMEngine, StepOutput
from corral.engine.sequence import SamplingParams, Sequence
from corral.errors import CorralError

log = logging.getLogger(__name__)


def engine_thread() -> ThreadPoolExecutor:
    """The one thread that builds an engine (`.submit(LLMEngine, ...).result()`) and then steps it."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-engine")


class AsyncEngine:
    def __init__(
        self,
        engine: LLMEngine,
        on_step: Callable[[list[StepOutput], float], None] | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        """`executor`: the `engine_thread` that built `engine` (a new one when it was built elsewhere)."""
        self.engine = engine
        self.on_step = on_step
        self._queues: dict[str, asyncio.Queue[StepOutput | BaseException]] = {}
        self._pending_add: list[tuple[list[int], SamplingParams, str]] = []
        self._pending_abort: list[str] = []
        self._wake = asyncio.Event()
        self._executor = executor or engine_thread()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="corral-engine-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    @property
    def num_pending(self) -> int:
        return len(self._pending_add)

    def _apply_pending(self) -> None:
        for request_id in self._pending_abort:
            self.engine.abort(request_id)
            self._queues.pop(request_id, None)
        self._pending_abort.clear()
        for ids, params, request_id in self._pending_add:
            queue = self._queues.get(request_id)
            if queue is None:
                continue  # aborted before it was added
            try:
                self.engine.add_request(ids, params, request_id)
            except CorralError as exc:
                queue.put_nowait(exc)
        self._pending_add.clear()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._apply_pending()
            if not self.engine.has_unfinished():
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            try:
                outputs = await loop.run_in_executor(self._executor, self.engine.step)
            except Exception as exc:  # noqa: BLE001 - fail the requests in flight, keep serving
                log.exception("engine step failed")
                self._fail_all(exc)
                continue
            for out in outputs:
                queue = self._queues.get(out.request_id)
                if queue is not None:
                    queue.put_nowait(out)
                if out.finished:
                    self._queues.pop(out.request_id, None)
            if self.on_step is not None:
                self.on_step(outputs, time.monotonic() - started)

    def _fail_all(self, exc: BaseException) -> None:
        for request_id, queue in list(self._queues.items()):
            queue.put_nowait(exc)
            self.engine.abort(request_id)
        self._queues.clear()

    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None) -> str:
        """Check and queue a request (raising the client's error now); returns its id."""
        self.engine.check_request(prompt_ids, params)
        waiting = len(self.engine.scheduler.waiting) + len(self._pending_add)
        if waiting >= self.engine.settings.max_waiting:
            from corral.errors import OverloadedError

            raise OverloadedError(
                f"the worker's queue is full ({waiting} requests waiting)", retry_after_s=1.0
            )
        request_id = request_id or uuid.uuid4().hex
        self._queues[request_id] = asyncio.Queue()
        self._pending_add.append((prompt_ids, params, request_id))
        self._wake.set()
        return request_id

    def abort(self, request_id: str) -> None:
        if self._queues.pop(request_id, None) is not None:
            self._pending_abort.append(request_id)
            self._wake.set()

    async def stream(self, request_id: str) -> AsyncIterator[StepOutput]:
        """The outputs of a submitted request; stopping early aborts it."""
        queue = self._queues.get(request_id)
        if queue is None:
            return
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.abort(request_id)

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None
    ) -> AsyncIterator[StepOutput]:
        async for out in self.stream(self.submit(prompt_ids, params, request_id)):
            yield out

    def live_sequences(self) -> list[Sequence]:
        return list(self.engine.seqs.values())
