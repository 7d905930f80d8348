"""What the gateway checks and changes in a request body before routing it, and how answers are traced."""

from __future__ import annotations

import asyncio
from typing import Any

from corral.errors import InvalidInputError


def check(kind: str, body: dict[str, Any]) -> bool:
    """Refuse bodies no upstream could accept (400, naming the field); returns whether to stream.

    Everything else, including fields the gateway does not know, goes upstream unchanged.
    """
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidInputError("`messages` must be a non-empty list of {role, content} objects")
        for index, message in enumerate(messages):
            check_message(index, message)
    elif kind == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
            raise InvalidInputError("`prompt` must be a string or a non-empty list")
    elif not isinstance(body.get("input"), str | list) or body.get("input") == []:
        raise InvalidInputError("`input` must be a string or a non-empty list")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidInputError("`stream` must be true or false")
    if kind == "embeddings" and stream:
        raise InvalidInputError("embeddings cannot be streamed")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidInputError("`stream_options` must be an object")
    return stream


def check_message(index: int, message: Any) -> None:
    """A chat message needs a string `role`; all but assistant (with tool calls) and tool need `content`."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise InvalidInputError(f"`messages[{index}]` must be an object with a string `role`")
    content = message.get("content")
    if message["role"] == "assistant" and (message.get("tool_calls") or message.get("function_call")):
        return
    if not isinstance(content, str | list):
        raise InvalidInputError(
            f"`messages[{index}].content` is required: a string or a list of content parts"
        )


def user_of(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    return user[:256] if isinstance(user, str) and user else None


def trace_view(kind: str, response: dict[str, Any]) -> dict[str, Any]:
    """The answer as it is stored: embeddings keep their count and usage, not the vectors."""
    if kind != "embeddings":
        return response
    data = response.get("data")
    return {
        "object": "list",
        "data_count": len(data) if isinstance(data, list) else 0,
        "usage": response.get("usage"),
    }


async def render_prompt(registry: Any, kind: str, body: dict[str, Any]) -> str | None:
    """Replace `"corral": {"prompt": REF, "variables": {...}}` by the rendered template; returns its version."""
    extension = body.pop("corral", None)
    if extension is None:
        return None
    if not isinstance(extension, dict) or not isinstance(extension.get("prompt"), str):
        raise InvalidInputError('`corral` must be {"prompt": "name@alias", "variables": {...}}')
    variables = extension.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidInputError("`corral.variables` must be an object")
    if registry is None:
        raise InvalidInputError("this gateway has no registry, so it cannot render prompt templates")
    if kind == "embeddings":
        raise InvalidInputError("prompt templates apply to chat and completions, not embeddings")
    from corral.registry import render_template

    version = await asyncio.to_thread(registry.prompts.get, extension["prompt"])
    rendered = render_template(version.template, variables, label=f"prompt {version.ref}")
    if kind == "chat":
        messages = rendered if isinstance(rendered, list) else [{"role": "user", "content": str(rendered)}]
        extra = body.get("messages")
        body["messages"] = messages + (extra if isinstance(extra, list) else [])
    else:
        text = (
            rendered if isinstance(rendered, str) else "\n".join(str(m.get("content", "")) for m in rendered)
        )
        body["prompt"] = text
    return str(version.ref)
