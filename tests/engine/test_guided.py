"""Structured outputs and tool calls through a real worker: the openai SDK, LangChain and instructor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from tests.engine.test_server import RunningWorker, start_worker

from corral.engine.llm_engine import LLMEngine
from corral.engine.sequence import SamplingParams

# bounded fields only: a random model inside a free string rarely picks the closing quote, and
# xgrammar 0.2.9 lets a maxLength string hold raw control characters (docs/engine.md)
TICKET = {
    "type": "object",
    "properties": {
        "priority": {"type": "string", "enum": ["low", "high"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "urgent": {"type": "boolean"},
    },
    "required": ["priority", "count", "urgent"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "days"],
        },
    },
}
REFUND = {
    "type": "function",
    "function": {
        "name": "refund",
        "parameters": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    },
}
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, REFUND)}  # type: ignore[index]
MESSAGES = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def long_model(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny random Llama with room (1,024 positions) for tool listings in its character-sized tokens."""
    from corral.testing import make_tiny_model

    root = tmp_path_factory.mktemp("tiny-long")
    return make_tiny_model(root, arch="llama", seed=0, initializer_range=0.2, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def worker(long_model: Any) -> Iterator[RunningWorker]:
    running = start_worker(long_model, kv_cache_gb=0.01)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def starter() -> Iterator[RunningWorker]:
    from corral.train.starter import MODEL_DIR

    running = start_worker(MODEL_DIR, kv_cache_gb=0.004)
    yield running
    running.stop()


def check_calls(calls: Any) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.id.startswith("call_") and call.type == "function"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("which", ["worker", "starter"])
def test_json_schema_answers_parse_and_validate_or_say_length(which: str, request: Any) -> None:
    w: RunningWorker = request.getfixturevalue(which)
    reply = w.client().chat.completions.create(
        model="tiny@1",
        messages=[{"role": "user", "content": "File a ticket"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "t", "schema": TICKET, "strict": True},
        },
        n=6,
        temperature=1.0,
        seed=3,
        max_tokens=80,
    )
    reasons = [c.finish_reason for c in reply.choices]
    assert set(reasons) <= {"stop", "length"} and "stop" in reasons
    for choice in reply.choices:
        if choice.finish_reason == "stop":
            jsonschema.validate(json.loads(choice.message.content or ""), TICKET)
    cut = w.client().chat.completions.create(
        model="tiny@1",
        messages=MESSAGES,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": TICKET}},
        max_tokens=3,
    )
    assert cut.choices[0].finish_reason == "length"


def test_json_object_and_logprobs_beside_it(worker: RunningWorker) -> None:
    reply = worker.client().chat.completions.create(
        model="tiny@1",
        messages=MESSAGES,
        response_format={"type": "json_object"},
        max_tokens=100,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    choice = reply.choices[0]
    assert choice.message.content and choice.message.content[0] in "{["
    if choice.finish_reason == "stop":
        json.loads(choice.message.content)
    assert choice.logprobs is not None and len(choice.logprobs.content or []) >= 1


@pytest.mark.parametrize("which", ["worker", "starter"])
@pytest.mark.parametrize("stream", [False, True])
def test_required_tool_choice_always_yields_a_valid_call(which: str, stream: bool, request: Any) -> None:
    w: RunningWorker = request.getfixturevalue(which)
    kw: dict[str, Any] = {
        "model": "tiny@1",
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [WEATHER, REFUND] if which == "worker" else [REFUND],
        "tool_choice": "required",
        "temperature": 1.0,
        "seed": 11,
        "max_tokens": 200 if which == "worker" else None,  # the starter's 256 positions: what is left
        "n": 3,
    }
    client = w.client()
    if not stream:
        reply = client.chat.completions.create(**kw)
        for choice in reply.choices:
            assert choice.finish_reason == "tool_calls"
            check_calls(choice.message.tool_calls)
        return
    calls: dict[int, list[Any]] = {0: [], 1: [], 2: []}
    reasons: dict[int, str | None] = {}
    for chunk in client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            calls[c.index] += c.delta.tool_calls or []
            reasons[c.index] = c.finish_reason or reasons.get(c.index)
    assert reasons == {0: "tool_calls", 1: "tool_calls", 2: "tool_calls"}
    for got in calls.values():
        check_calls([type("Call", (), {"id": d.id, "type": d.type, "function": d.function}) for d in got])


def test_named_tool_choice_calls_that_function(worker: RunningWorker) -> None:
    reply = worker.client().chat.completions.create(
        model="tiny@1",
        messages=MESSAGES,
        tools=[WEATHER, REFUND],
        tool_choice={"type": "function", "function": {"name": "refund"}},
        max_tokens=100,
        temperature=0,
    )
    calls = reply.choices[0].message.tool_calls
    check_calls(calls)
    assert calls is not None and [c.function.name for c in calls] == ["refund"]


def test_auto_and_none_leave_free_text_possible(worker: RunningWorker) -> None:
    client = worker.client()
    for choice in ("auto", "none"):
        reply = client.chat.completions.create(
            model="tiny@1",
            messages=MESSAGES,
            tools=[WEATHER],
            tool_choice=choice,
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].finish_reason in {"stop", "length", "tool_calls"}
        if reply.choices[0].finish_reason != "tool_calls":
            assert reply.choices[0].message.tool_calls is None


def test_a_tool_result_turn_renders_and_a_bad_choice_is_a_400(worker: RunningWorker) -> None:
    import openai

    client = worker.client()
    history = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model="tiny@1", messages=history, tools=[WEATHER], max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].finish_reason in {"stop", "length", "tool_calls"}
    with pytest.raises(openai.BadRequestError, match="not in 'tools'"):
        client.chat.completions.create(
            model="tiny@1",
            messages=MESSAGES,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )
    with pytest.raises(openai.BadRequestError, match="JSON schema"):
        client.chat.completions.create(
            model="tiny@1",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "nah"}}},
        )


def test_langchain_bind_tools_and_structured_output(worker: RunningWorker) -> None:
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    class Refund(BaseModel):
        """Refund an order."""

        ok: bool
        order: int = Field(ge=0)

    llm = ChatOpenAI(
        base_url=worker.url + "/v1",
        api_key="unused",
        model="tiny@1",
        max_tokens=100,
        temperature=0,  # type: ignore[arg-type]
    )
    message = llm.bind_tools([Refund], tool_choice="any").invoke("refund please")
    assert message.tool_calls and message.tool_calls[0]["name"] == "Refund"  # type: ignore[attr-defined]
    Refund.model_validate(message.tool_calls[0]["args"])  # type: ignore[attr-defined]
    streamed = llm.bind_tools([Refund], tool_choice="Refund").stream("refund please")
    merged = None
    for piece in streamed:
        merged = piece if merged is None else merged + piece
    assert merged is not None and merged.tool_calls[0]["name"] == "Refund"  # type: ignore[attr-defined]


def test_instructor_structured_call(worker: RunningWorker) -> None:
    import instructor
    from pydantic import BaseModel, Field

    class Flag(BaseModel):
        urgent: bool
        level: int = Field(ge=0, le=9)

    client = instructor.from_openai(worker.client(), mode=instructor.Mode.TOOLS)
    flag = client.chat.completions.create(
        model="tiny@1",
        messages=MESSAGES,
        response_model=Flag,
        max_tokens=100,
        temperature=0,
        max_retries=0,  # type: ignore[arg-type]
    )
    assert isinstance(flag, Flag)


def test_guided_rows_leave_their_batch_neighbours_unchanged(long_model: Any) -> None:
    from corral.config import EngineSettings

    engine = LLMEngine(long_model, EngineSettings(kv_cache_gb=0.004))
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    alone = engine.generate([[5, 6, 7, 8]], greedy)[0].output_token_ids
    guided = engine.add_request(
        [9, 10, 11], SamplingParams(max_tokens=60, temperature=0, grammar=engine.grammars.json_schema(TICKET))
    )
    plain = engine.add_request([5, 6, 7, 8], SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    assert plain.output_token_ids == alone
    assert guided.finish_reason == "stop"
    jsonschema.validate(json.loads(guided.output_text), TICKET)
