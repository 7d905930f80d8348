"""The stages on the way in: the key, the deployment, limits, prompt templates and body checks."""

from __future__ import annotations

from typing import Any

from corral.errors import InvalidInputError, NotFoundError
from corral.gateway import checks
from corral.gateway.auth import KeyRing
from corral.gateway.costs import estimate_tokens, prompt_text
from corral.gateway.http import header, parse_json_object, read_body
from corral.gateway.limits import Limiter
from corral.gateway.routes import RouteTable
from corral.gateway.stages import Call, Stage

COMPLETION_GUESS = 256  # completion tokens held for a request that sets no max_tokens


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
        raw = await read_body(call.receive, self.body_limit)
        call.state["request_bytes"] = len(raw)
        call.body = parse_json_object(raw)
        model = call.body.get("model")
        if not isinstance(model, str) or not model:
            problem = (
                "is required" if model in (None, "") else f"must be a string, not {type(model).__name__}"
            )
            raise InvalidInputError(
                f"`model` {problem}: the name of a deployment (GET /v1/models lists them)"
            )
        call.live = self.routes.live.get(model)
        if call.live is None or (call.key is not None and not call.key.reaches(model)):
            # a deployment this key may not use reads as missing: names are not revealed by 403 vs 404
            raise NotFoundError(
                f"model '{model}' does not exist", hint="GET /v1/models lists the models you can use"
            )
        call.deployment = model


class Limits(Stage):
    """The key may use this deployment, within its rate, token and budget limits (usage is counted by Cost)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def before(self, call: Call) -> None:
        key = call.key
        assert key is not None
        key.check(call.deployment)
        tokens, cost = (0, 0.0)
        if key.tpm is not None or key.budget_usd is not None:  # only then is the estimate worth making
            tokens, cost = reservation_estimate(call.body, call.live)
        held = await self.limiter.admit(key, tokens, cost)
        # reserved up front so that concurrent requests see each other; Cost settles it, and a later
        # stage refusing the request releases it
        call.state["reservation"] = held
        call.state["release"] = lambda: self.limiter.record(key, 0, 0.0, held)


def reservation_estimate(body: dict[str, Any], live: Any) -> tuple[int, float]:
    """Tokens and cost to hold for a request: its prompt (estimated) plus `max_tokens` (or a default)."""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    completion = (
        limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else COMPLETION_GUESS
    )
    prompt = estimate_tokens(prompt_text(body))
    prices = [r.price for r in (live.routes if live else []) if r is not None]
    cost = max(
        ((prompt * p.prompt_per_1k + completion * p.completion_per_1k) / 1000 for p in prices), default=0.0
    )
    return prompt + completion, cost


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
