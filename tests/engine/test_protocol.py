"""Request bodies in OpenAI's wire format: strict types, nullable optional fields, named errors."""

from __future__ import annotations

from typing import Any

import pytest

from corral.engine import protocol as p
from corral.errors import InvalidInputError

CHAT = {"model": "tiny@1", "messages": [{"role": "user", "content": "hi"}]}


def test_null_optional_fields_mean_their_defaults() -> None:
    nulls = {"temperature": None, "top_p": None, "max_tokens": None, "stop": None, "seed": None, "n": None}
    req = p.parse(p.ChatRequest, {**CHAT, **nulls, "stream_options": None, "logprobs": None})
    assert (req.temperature, req.top_p, req.n, req.max_tokens) == (1.0, 1.0, 1, None)
    assert not req.include_usage


def test_integers_are_numbers_but_numbers_are_not_integers() -> None:
    req = p.parse(p.ChatRequest, {**CHAT, "temperature": 0, "top_p": 1})
    assert req.temperature == 0.0 and req.top_p == 1.0
    with pytest.raises(InvalidInputError, match="max_tokens"):
        p.parse(p.ChatRequest, {**CHAT, "max_tokens": 10.5})


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": [True, False]}, "prompt"),
        ({"prompt": "x", "logprobs": True}, "logprobs"),
        ({"prompt": "x", "stream_options": {"include_usage": "yes"}}, "include_usage"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "suffix": "y"}, "suffix"),
        ({"prompt": "x", "echo": "yes"}, "echo"),
        ({"prompt": "x", "min_tokens": -1}, "min_tokens"),
    ],
)
def test_wrong_types_and_unsupported_fields_are_named(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(InvalidInputError, match=needle):
        p.parse(p.CompletionRequest, {"model": "tiny@1", **body})


def test_unsupported_fields_at_their_harmless_defaults_pass() -> None:
    body = {**CHAT, "response_format": {"type": "text"}, "logit_bias": {}, "tools": None}
    assert p.parse(p.ChatRequest, body).model == "tiny@1"
