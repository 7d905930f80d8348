"""The request path as an ordered list of stages: what each may do before routing, after, and per SSE chunk.

A stage is an object with any of these hooks (the defaults do nothing and are skipped):

- `await before(call) -> Answer | None`: in list order, before routing. Return an `Answer` to reply
  without routing (e.g. a 400); raise a `CorralError` to refuse.
- `await after(call) -> Answer | Retry | None`: in reverse order, once a non-streamed upstream answer
  is in `call.answer` and before it is sent. Return an `Answer` to send instead, or `Retry` to ask the
  router for one more attempt (the next in the deployment's plan).
- `chunk(call, events) -> list[bytes]`: in reverse order, for each batch of SSE events of a streamed
  answer before they are sent; return what to send now (hold events back on `call.state` and return
  them later, or rewrite them). `stream_end(call) -> list[bytes]` releases what is still held.
- `finish(call)`: in list order, after the exchange (answered, refused or failed): in memory only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from corral.errors import InvalidInputError, NotFoundError
from corral.gateway import checks
from corral.gateway.http import header, parse_json_object, read_body

if TYPE_CHECKING:
    from corral.gateway.auth import ApiKey, KeyRing
    from corral.gateway.deployments import LiveDeployment
    from corral.gateway.limits import Limiter
    from corral.gateway.parts import Parts
    from corral.gateway.routes import RouteTable
    from corral.gateway.upstream import Endpoint


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
    tokens: tuple[int, int] = (0, 0)
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0  # set by the proxy when the exchange ends, before `finish`
    state: dict[str, Any] = field(default_factory=dict)  # per-stage scratch space, keyed by stage


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


class Keys(Stage):
    """Who is calling: the bearer key (401 without a valid one when keys are required)."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    async def before(self, call: Call) -> None:
        call.key = await self.keys.authenticate(header(call.scope, b"authorization"))


class Deployment(Stage):
    """The JSON body (413 over the size limit) and the deployment its `model` names (404 for none)."""

    def __init__(self, routes: RouteTable, body_limit: int) -> None:
        self.routes = routes
        self.body_limit = body_limit

    async def before(self, call: Call) -> None:
        call.body = parse_json_object(await read_body(call.receive, self.body_limit))
        model = call.body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidInputError(
                "`model` is required: the name of a deployment (GET /v1/models lists them)"
            )
        call.live = self.routes.live.get(model)
        if call.live is None:
            raise NotFoundError(
                f"model '{model}' does not exist", hint="GET /v1/models lists the models you can use"
            )
        call.deployment = model


class Limits(Stage):
    """The key may use this deployment, within its rate, token and budget limits (usage is counted by Cost)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def before(self, call: Call) -> None:
        assert call.key is not None
        call.key.check(call.deployment)
        await self.limiter.admit(call.key)


class PromptTemplates(Stage):
    """`"corral": {"prompt": REF, "variables": {...}}` replaced by the rendered registry template."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    async def before(self, call: Call) -> None:
        call.prompt_ref = await checks.render_prompt(self.registry, call.kind, call.body)


class BodyChecks(Stage):
    """Bodies no upstream could accept are refused with a 400 naming the field."""

    async def before(self, call: Call) -> None:
        call.stream = checks.check(call.kind, call.body)
        call.user = checks.user_of(call.body)
        call.session = header(call.scope, b"x-corral-session")


def build_stages(parts: Parts, extra: list[Stage] | None = None) -> list[Stage]:
    """The default request path for these parts; `extra` stages run after the body checks."""
    from corral.gateway.accounting import Cost, Trace

    stages: list[Stage] = [
        Keys(parts.keys),
        Deployment(parts.routes, int(parts.settings.gateway.max_body_mb * 1024 * 1024)),
        Limits(parts.limiter),
        PromptTemplates(parts.registry),
        BodyChecks(),
        *(extra or []),
        Cost(parts.metrics, parts.limiter),
    ]
    if parts.tracer is not None:
        stages.append(Trace(parts.tracer))
    return stages
