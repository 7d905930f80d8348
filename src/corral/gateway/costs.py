"""Tokens and money: usage from upstream answers (or counted, or estimated), cost per trace, totals."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from corral.errors import InvalidInputError
from corral.store import Store
from corral.store.models import TraceRow

# What costs can be grouped by: `version` is the model version that answered and `route` the route
# taken, so a canary's cost can be set beside production's within one deployment.
GROUPS = {
    "day": TraceRow.day,
    "key": TraceRow.key_name,
    "deployment": TraceRow.deployment,
    "version": TraceRow.model_version,
    "route": TraceRow.route,
    "model": TraceRow.deployment,  # the first name of `deployment`, still accepted
}
DEFAULT_GROUPS = "day,key,deployment"


def group_names(text: str) -> list[str]:
    """`deployment,version` → ['deployment', 'version'], every name checked."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        shown = [g for g in GROUPS if g != "model"]
        raise InvalidInputError(
            f"cannot group costs by {', '.join(unknown)}", hint=f"use any of {', '.join(shown)}"
        )
    return names


def estimate_tokens(text: str) -> int:
    """About four characters a token for English text; marked as an estimate wherever it is used."""
    return math.ceil(len(text) / 4) if text else 0


def _tool_calls_text(message: dict[str, Any]) -> list[str]:
    """The names and arguments of an assistant message's tool calls: tokens the model wrote or reads."""
    parts: list[str] = []
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            parts.extend(str(function.get(k) or "") for k in ("name", "arguments"))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        parts.extend(str(legacy.get(k) or "") for k in ("name", "arguments"))
    return parts


def prompt_text(body: dict[str, Any]) -> str:
    """The text a request sends, for counting: chat messages (with tool calls and the `tools` schemas),
    a completion prompt or embedding input."""
    if isinstance(body.get("messages"), list):
        parts = []
        for message in body["messages"]:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    t for p in content if isinstance(p, dict) and isinstance(t := p.get("text"), str)
                )
            parts.extend(_tool_calls_text(message))
        for schemas in (body.get("tools"), body.get("functions")):
            if isinstance(schemas, list) and schemas:
                parts.append(orjson.dumps(schemas).decode())  # the model reads the schemas too
        return "\n".join(parts)
    value = body.get("prompt", body.get("input", ""))
    if isinstance(value, list):
        return "\n".join(v for v in value if isinstance(v, str))
    return value if isinstance(value, str) else ""


def answer_text(response: dict[str, Any] | None) -> str:
    """The text an answer holds, for counting: message content and tool calls, or completion text."""
    parts = []
    for choice in (response or {}).get("choices") or ():
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, str):
            parts.append(text)
        if isinstance(message, dict):
            parts.extend(_tool_calls_text(message))
    return "".join(parts)


def usage_tokens(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) from an OpenAI `usage` object, or None when it is absent or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt: Any = usage.get("prompt_tokens")
    completion: Any = usage.get("completion_tokens", 0)
    if not (_count(prompt) and _count(completion)):
        return None  # negative, huge or not a count: estimate instead
    return int(prompt), int(completion)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


MAX_RECOUNT_CHARS = 1_000_000  # longer traces keep the four-characters-a-token estimate


@functools.lru_cache(maxsize=16)
def _tokenizer(directory: str) -> Any:
    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    return Tokenizer.from_file(str(path))  # a local file only: nothing is downloaded


def exact_counter(
    directory: str,
) -> Callable[[dict[str, Any] | None, dict[str, Any] | None], tuple[int, int] | None] | None:
    """(prompt, completion) token counts of an exchange with the local model's tokenizer, if it has one.

    The counter gives None for an exchange past MAX_RECOUNT_CHARS: its estimate stands (and says so)
    rather than minutes of tokenizing.
    """
    tokenizer = _tokenizer(directory)
    if tokenizer is None:
        return None

    def count(request: dict[str, Any] | None, response: dict[str, Any] | None) -> tuple[int, int] | None:
        texts = [prompt_text(request or {}), answer_text(response)]
        if sum(len(t) for t in texts) > MAX_RECOUNT_CHARS:
            return None
        # encode_batch releases the GIL, so the event loop keeps answering while this thread counts
        prompt, completion = tokenizer.encode_batch(texts)
        return len(prompt.ids), len(completion.ids)

    return count


def month_start(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-01")


def month_spend(store: Store) -> dict[int, float]:
    """Each key's spend this calendar month (UTC), shadow copies excluded: what budgets are checked against."""
    query = (
        select(TraceRow.key_id, func.sum(TraceRow.cost_usd))
        .where(TraceRow.day >= month_start(), TraceRow.key_id.is_not(None), TraceRow.shadow_of.is_(None))
        .group_by(TraceRow.key_id)
    )
    with store.session() as session:
        return {int(k): float(v or 0) for k, v in session.execute(query).all() if k is not None}


def totals(
    store: Store, group_by: list[str], since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    """Requests, tokens and cost grouped by any of GROUPS, oldest day first."""
    group_by = group_names(",".join(group_by))
    for name, day in (("since", since), ("until", until)):
        if day:
            try:
                datetime.strptime(day, "%Y-%m-%d")
            except ValueError:
                raise InvalidInputError(
                    f"{name} '{day}' is not a day", hint="write it as YYYY-MM-DD"
                ) from None
    columns = [GROUPS[g].label(g) for g in group_by]
    query = select(
        *columns,
        func.count().label("requests"),
        func.coalesce(func.sum(TraceRow.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(TraceRow.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(TraceRow.cost_usd), 0.0).label("cost_usd"),
    )
    if since:
        query = query.where(TraceRow.day >= since)
    if until:
        query = query.where(TraceRow.day <= until)
    if columns:
        query = query.group_by(*[GROUPS[g] for g in group_by]).order_by(*[GROUPS[g] for g in group_by])
    with store.session() as session:
        return [dict(row._mapping) for row in session.execute(query).all()]
