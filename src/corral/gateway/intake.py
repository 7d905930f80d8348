"""The stages on the way in: the key, the deployment, limits, prompt templates and body checks."""

from __future__ import annotations

from typing import Any

from corral.errors import InvalidInputError, NotFoundError
from corral.gateway import checks
from corral.gateway.auth import KeyRing
from corral.gateway.http import header, parse_json_object, read_body
from corral.gateway.limits import Limiter
from corral.gateway.routes import RouteTable
from corral.gateway.stages import Call, Stage


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
            problem = (
                "is required" if model in (None, "") else f"must be a string, not {type(model).__name__}"
            )
            raise InvalidInputError(
                f"`model` {problem}: the name of a deployment (GET /v1/models lists them)"
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
