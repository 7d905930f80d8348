"""Tool calls through a real gateway: traced whole when streamed, counted in tokens, turned into training rows."""

from __future__ import annotations

import json

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its number and say where it is",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def _ask(c, stream: bool):  # type: ignore[no-untyped-def]
    return c.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "where is order 42?"}], tools=TOOLS, stream=stream
    )


def test_streamed_and_plain_tool_calls_are_traced_whole_and_counted(gateway, fake, h):
    fake.configure(tool_calls=True, usage=False)
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        c = h.client(gw)
        plain = _ask(c, stream=False)
        chunks = list(_ask(c, stream=True))
        traces = h.traces(gw)
    assert plain.choices[0].message.tool_calls[0].function.name == "lookup_order"
    assert any(ch.choices and ch.choices[0].delta.tool_calls for ch in chunks)
    plain_trace, stream_trace = traces
    for trace in (plain_trace, stream_trace):
        [call] = trace["response"]["choices"][0]["message"]["tool_calls"]
        assert call["id"] == "call_fake_1" and call["function"]["name"] == "lookup_order"
        assert json.loads(call["function"]["arguments"]) == {"query": "a: w0 w1 w2"}
        assert trace["tokens_estimated"] and trace["completion_tokens"] > 0
    # the folded stream is stored as the plain answer is
    assert (
        stream_trace["response"]["choices"][0]["message"] == plain_trace["response"]["choices"][0]["message"]
    )
    assert stream_trace["response"]["choices"][0]["finish_reason"] == "tool_calls"
    # the prompt estimate counts the tools' schemas, not only "where is order 42?" (5 tokens)
    assert plain_trace["prompt_tokens"] > len(json.dumps(TOOLS)) // 4


def test_from_traces_carries_tool_calls_into_chat_rows_the_starter_template_trains_on(gateway, fake, h):
    from corral.data.traces import TraceQuery, dataset_from_traces
    from corral.train.examples import target_spans
    from corral.train.starter import MODEL_DIR

    fake.configure(tool_calls=True, usage=False)
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        c = h.client(gw)
        _ask(c, stream=True)
        h.chat(c, model="m", text="hello")  # an ordinary answer, without tools
        assert gw.gateway.flush_traces()
        version, report = dataset_from_traces(gw.gateway.registry, "from-traffic", TraceQuery())
        rows = gw.gateway.registry.datasets.rows(version.ref)
    assert report["skipped"] == {}
    [tool_row] = [r for r in rows if "tools" in r]
    answer = tool_row["messages"][-1]
    assert answer["role"] == "assistant" and answer["tool_calls"][0]["function"]["name"] == "lookup_order"
    from corral.engine.loader import load_tokenizer

    text, spans = target_spans(tool_row, "chat", load_tokenizer(MODEL_DIR))
    [(start, end)] = spans
    trained = text[start:end]
    assert '<tool_call>\n{"name": "lookup_order", "arguments": {"query": "a: w0 w1 w2"}}' in trained
    assert "lookup_order" in text[:start]  # the tools offered are in the prompt, not the target
