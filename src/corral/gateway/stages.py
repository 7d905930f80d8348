"""The request path as an ordered list of stages: what each may do before routing, after, and per SSE chunk.

A stage is an object with any of these hooks (the defaults do nothing and are skipped):

- `await before(call) -> Answer | None`: in list order, before routing. Return an `Answer` to reply
  without routing (e.g. a 400); raise a `CorralError` to refuse.
- `await after(call) -> Answer | Retry | None`: in reverse order, once a non-streamed upstream answer
  is in `call.answer` and before it is sent. Return an `Answer` to send instead, or `Retry` to ask the
  router for one more attempt (the next in the deployment's plan).
- `chunk(call, events) -> list[bytes]`: in reverse order, for each batch of SSE events of a streamed
  answer before they are sent; return what to send now (hold events back on `call.state` and return
  them later, or rewrite them). `stream_end(call) -> list[bytes]` releases what is still held. A
  stage that sets `call.stop_stream` ends the stream after the events it returns: the upstream is
  closed and nothing more is read or sent (e.g. an error event from a blocking check).
- `finish(call)`: in list order, after the exchange (answered, refused or failed): in memory only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corral.gateway.auth import ApiKey
    from corral.gateway.deployments import LiveDeployment
    from corral.gateway.upstream import Endpoint
    from corral.store.traces import TraceRecord


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply a stage sends itself (before routing) or puts in place of the upstream's."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Retry:
    """A stage's request for one more upstream attempt (the answer it saw is discarded)."""

    reason: str


@dataclass(slots=True)
class Call:
    """One request (or one shadow copy) on its way through the stages; what it did is traced."""

    trace_id: str
    kind: str
    scope: dict[str, Any]
    receive: Any  # the ASGI receive callable (the request body is read by the Deployment stage)
    body: dict[str, Any] = field(default_factory=dict)
    key: ApiKey | None = None
    deployment: str = ""
    live: LiveDeployment | None = None
    stream: bool = False
    user: str | None = None
    session: str | None = None
    prompt_ref: str | None = None
    shadow_of: str | None = None
    started: float = field(default_factory=time.perf_counter)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    endpoint: Endpoint | None = None
    status: int = 0
    error: str | None = None
    answer: bytes | None = None  # a non-streamed upstream answer, before it is sent
    response: dict[str, Any] | None = None
    usage: Any = None
    ttft_s: float | None = None
    fallback: bool = False
    attempts: int = 0
    finished: bool = False
    record: TraceRecord | None = None  # filled once by the Cost stage in `finish`; read by later stages
    latency_s: float = 0.0  # set by the proxy when the exchange ends, before `finish`
    state: dict[str, Any] = field(default_factory=dict)  # per-stage scratch space, keyed by stage
    notes: dict[str, Any] = field(default_factory=dict)  # what stages add to the trace's meta (e.g. guard)
    stop_stream: bool = False  # set by a stage's `chunk`: end the stream after the events it returned


class Stage:
    """Base class with no-op hooks; the proxy calls only the hooks a stage overrides."""

    async def before(self, call: Call) -> Answer | None:
        return None

    async def after(self, call: Call) -> Answer | Retry | None:
        return None

    def chunk(self, call: Call, events: list[bytes]) -> list[bytes]:
        return events

    def stream_end(self, call: Call) -> list[bytes]:
        return []

    def finish(self, call: Call) -> None:
        return None


def overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)
