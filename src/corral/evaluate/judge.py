"""LLM-as-judge: a registered prompt template is the rubric, sent to any OpenAI-compatible route.

The rubric is rendered with `question`, `answer` and `reference`; the judge's answer must contain
`score: N` (or be just the number) on the rubric's scale (tags `min`/`max`, default 0 to 1), which is
mapped onto [0, 1]. An answer without a score on the scale counts as `judge_unparsed`, a failed or
timed-out request as `judge_failed`; neither stops the run.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx

from corral.errors import InvalidInputError
from corral.evaluate.client import SOURCE_HEADER, Endpoint, text_of
from corral.evaluate.items import Item
from corral.evaluate.outcome import Outcome
from corral.registry import PromptVersion, Registry, render_template

_SCORE = re.compile(r"(?i)\bscore\b\s*[:=]?\s*(-?\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*\.?\s*$")


@dataclass(frozen=True)
class JudgeSpec:
    rubric: PromptVersion
    endpoint: Endpoint
    low: float = 0.0
    high: float = 1.0

    @property
    def metric(self) -> str:
        return f"judge:{self.rubric.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "rubric": self.rubric.ref,
            "url": self.endpoint.url,
            "model": self.endpoint.model,
            "scale": [self.low, self.high],
        }

    @classmethod
    def from_options(
        cls,
        registry: Registry,
        rubric: str | None,
        url: str | None,
        model: str | None,
        api_key_env: str | None = None,
        timeout_s: float = 60.0,
    ) -> JudgeSpec:
        if not rubric or not url or not model:
            raise InvalidInputError(
                "a judge needs --judge-rubric PROMPT_REF, --judge-url URL and --judge-model NAME"
            )
        version = registry.prompts.get(rubric)
        try:
            low, high = float(version.tags.get("min", 0)), float(version.tags.get("max", 1))
        except (TypeError, ValueError):
            raise InvalidInputError(f"rubric {version.ref}: tags 'min' and 'max' must be numbers") from None
        if high <= low:
            raise InvalidInputError(f"rubric {version.ref}: its scale max {high} is not above min {low}")
        from corral.evaluate.target import key_header

        return cls(version, Endpoint(url, model, key_header(api_key_env), timeout_s), low, high)


def parse_score(answer: str, low: float = 0.0, high: float = 1.0) -> float | None:
    """The judge's score mapped onto [0, 1], or None when the answer holds no score on the scale."""
    found = _SCORE.search(answer) or _NUMBER.match(answer)
    if not found:
        return None
    value = float(found.group(1))
    if not low <= value <= high:
        return None
    return (value - low) / (high - low)


def _messages(spec: JudgeSpec, outcome: Outcome) -> list[dict[str, str]]:
    question = Item(outcome.position, outcome.request, outcome.reference).prompt_text
    variables = {
        "question": question,
        "answer": outcome.prediction or "",
        "reference": outcome.reference or "",
    }
    rendered = render_template(spec.rubric.template, variables, label=f"rubric {spec.rubric.ref}")
    return [{"role": "user", "content": rendered}] if isinstance(rendered, str) else rendered


async def judge_one(client: httpx.AsyncClient, spec: JudgeSpec, outcome: Outcome) -> None:
    name = spec.metric
    body = {"model": spec.endpoint.model, "messages": _messages(spec, outcome), "temperature": 0.0}
    try:
        response = await client.post(spec.endpoint.url.rstrip("/") + "/chat/completions", json=body)
        response.raise_for_status()
        answer = text_of(response.json())
    except (httpx.HTTPError, ValueError):
        outcome.scores[name], outcome.scores["judge_failed"] = None, 1.0
        return
    score = parse_score(answer, spec.low, spec.high)
    outcome.scores[name] = score
    if score is None:
        outcome.scores["judge_unparsed"] = 1.0


async def judge_outcomes(
    spec: JudgeSpec, outcomes: list[Outcome], names: list[str], concurrency: int = 16
) -> None:
    """Score every answered outcome with the judge (a failure is counted on the item, never raised)."""
    wrong = [n for n in names if n != spec.metric]
    if wrong:
        raise InvalidInputError(f"metric {wrong[0]} does not match the judge's rubric ({spec.metric})")
    gate = asyncio.Semaphore(concurrency)
    headers = {SOURCE_HEADER: "eval", **spec.endpoint.headers}
    async with httpx.AsyncClient(headers=headers, timeout=spec.endpoint.timeout_s) as client:

        async def one(outcome: Outcome) -> None:
            async with gate:
                await judge_one(client, spec, outcome)

        await asyncio.gather(*(one(o) for o in outcomes if o.ok))
