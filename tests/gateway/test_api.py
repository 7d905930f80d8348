"""The OpenAI API through the gateway with the real openai SDK, against a fake remote endpoint."""

from __future__ import annotations

import httpx
import openai
import pytest


@pytest.fixture
def served(gateway, fake, h):
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake, price={"prompt_per_1k": 1.0, "completion_per_1k": 2.0})]}}
    )
    with gateway(settings) as gw:
        yield gw


def test_chat_completion_with_the_openai_sdk_is_answered_and_traced(served, fake, h):
    raw = h.client(served).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hello there"}], user="alice"
    )
    answer = raw.parse()
    assert answer.choices[0].message.content.startswith("a:")
    trace_id = raw.headers["x-corral-trace-id"]
    [trace] = h.traces(served, id=trace_id)
    assert trace["status"] == 200 and trace["deployment"] == "m" and trace["user"] == "alice"
    assert trace["request"]["messages"][0]["content"] == "hello there"
    assert trace["response"]["choices"][0]["message"]["content"] == answer.choices[0].message.content
    assert (trace["prompt_tokens"], trace["completion_tokens"]) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )
    assert trace["cost_usd"] == pytest.approx(
        (answer.usage.prompt_tokens * 1 + answer.usage.completion_tokens * 2) / 1000
    )
    assert not trace["tokens_estimated"]
    assert fake.requests[-1]["body"]["model"] == "fake-model"  # the public name became the upstream's


def test_streaming_passes_chunks_through_and_traces_the_whole_answer(served, fake, h):
    stream = h.client(served).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a: w0 w1 w2"
    assert all(c.choices for c in chunks)  # the usage-only chunk the gateway asked for is not passed on
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    [trace] = h.traces(served)
    assert trace["stream"] and trace["response"]["choices"][0]["message"]["content"] == text
    assert trace["completion_tokens"] == 4 and not trace["tokens_estimated"] and trace["ttft_ms"] is not None


def test_streaming_client_that_asks_for_usage_gets_it(served, h):
    chunks = list(
        h.client(served).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_completions_and_embeddings(served, h):
    c = h.client(served)
    assert c.completions.create(model="m", prompt="say").choices[0].text.startswith("a:")
    streamed = "".join(
        ch.choices[0].text for ch in c.completions.create(model="m", prompt="say", stream=True) if ch.choices
    )
    assert streamed.startswith("a:")
    emb = c.embeddings.create(model="m", input=["one", "two"])
    assert len(emb.data) == 2
    kinds = {t["endpoint"] for t in h.traces(served)}
    assert kinds == {"completions", "embeddings"}
    [e] = h.traces(served, endpoint="embeddings")
    assert e["response"]["data_count"] == 2  # vectors are not stored


def test_fields_the_gateway_does_not_know_reach_the_upstream_unchanged(served, fake, h):
    h.chat(h.client(served), extra_body={"top_k": 3, "guided_json": {"type": "object"}}, seed=7)
    body = fake.requests[-1]["body"]
    assert body["top_k"] == 3 and body["guided_json"] == {"type": "object"} and body["seed"] == 7


def test_models_lists_deployments_and_errors_use_openai_json(served, h):
    c = h.client(served)
    assert [m.id for m in c.models.list()] == ["m"]
    with pytest.raises(openai.NotFoundError) as info:
        h.chat(c, model="nope")
    assert "nope" in info.value.message
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="m", messages=[])
    response = httpx.post(
        served.url + "/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {h.ADMIN_KEY}"},
    )
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-corral-trace-id"]
    assert httpx.get(served.base_url + "/nowhere").status_code == 404
    assert httpx.get(served.url + "/chat/completions").status_code == 405


def test_upstream_client_errors_pass_through_with_their_status(served, fake, h):
    fake.configure(fault="status", fault_status=422)
    with pytest.raises(openai.UnprocessableEntityError):
        h.chat(h.client(served))
    [trace] = h.traces(served)
    assert trace["status"] == 422 and "on purpose" in trace["error"]


def test_missing_usage_is_estimated_and_marked(served, fake, h):
    fake.configure(usage=False)
    h.chat(h.client(served), text="four words of prompt")
    [trace] = h.traces(served)
    assert trace["tokens_estimated"] and trace["prompt_tokens"] > 0 and trace["completion_tokens"] > 0


def test_feedback_is_recorded_against_a_trace(served, h):
    raw = h.client(served).chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    trace_id = raw.headers["x-corral-trace-id"]
    with h.admin(served) as a:
        assert (
            a.post(
                "/v1/feedback", json={"trace_id": trace_id, "thumbs": "up", "label": "helpful"}
            ).status_code
            == 200
        )
        assert (
            a.post(
                "/v1/feedback",
                json={"trace_id": trace_id, "score": 0.25, "comment": "meh", "correction": "Right."},
            ).status_code
            == 200
        )
        assert a.post("/v1/feedback", json={"trace_id": trace_id, "score": 3}).status_code == 400
        too_long = {"trace_id": trace_id, "score": 0, "correction": "x" * 20_000}
        refused = a.post("/v1/feedback", json=too_long)
        assert refused.status_code == 400 and "correction" in refused.json()["error"]["message"]
    assert served.gateway.flush_traces()
    from sqlalchemy import select

    from corral.store.models import FeedbackRow

    with served.gateway.store.session() as s:
        scores = sorted(
            r.score for r in s.scalars(select(FeedbackRow).where(FeedbackRow.trace_id == trace_id))
        )
    assert scores == [0.25, 1.0]
    with served.gateway.store.session() as s:
        corrections = {
            r.correction for r in s.scalars(select(FeedbackRow).where(FeedbackRow.trace_id == trace_id))
        }
    assert corrections == {None, "Right."}


def test_a_registered_prompt_template_is_rendered_and_its_version_traced(served, fake, h):
    served.gateway.registry.prompts.register(
        "greeting", {"messages": [{"role": "system", "content": "Greet {{ name }}."}]}
    )
    served.gateway.registry.prompts.set_alias("greeting", "production", 1)
    h.client(served).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"corral": {"prompt": "greeting@production", "variables": {"name": "Ada"}}},
    )
    sent = fake.requests[-1]["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Greet Ada."} and "corral" not in sent
    [trace] = h.traces(served)
    assert trace["prompt_ref"] == "greeting@1"


def test_health_ready_metrics_and_openapi(served, h):
    h.chat(h.client(served))
    assert httpx.get(served.base_url + "/health").json() == {"status": "ok"}
    assert httpx.get(served.base_url + "/ready").json()["ready"] is True
    metrics = httpx.get(served.base_url + "/metrics").text
    assert 'corral_requests_total{deployment="m"' in metrics and "corral_trace_queue" in metrics
    spec = httpx.get(served.base_url + "/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"]


def test_admin_costs_group_by_key_model_and_day(served, h):
    for _ in range(3):
        h.chat(h.client(served))
    assert served.gateway.flush_traces()
    with h.admin(served) as a:
        rows = a.get("/admin/costs", params={"group_by": "key,model"}).json()["data"]
        assert rows == [
            {
                "key": "admin",
                "model": "m",
                "requests": 3,
                "prompt_tokens": 6,
                "completion_tokens": 12,
                "cost_usd": pytest.approx(0.03),
            }
        ]
        assert a.get("/admin/costs", params={"group_by": "colour"}).status_code == 400
        bad_day = a.get("/admin/costs", params={"since": "yesterday"})
        assert bad_day.status_code == 400 and "YYYY-MM-DD" in bad_day.text


def test_a_client_that_disconnects_cancels_the_upstream_call(served, fake, h):
    fake.configure(latency_s=5)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            served.url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {h.ADMIN_KEY}"},
            timeout=0.5,
        )
    endpoint = served.gateway.live["m"].routes[0]
    import time

    deadline = time.monotonic() + 2  # well before the upstream would have answered
    while sum(endpoint.in_flight) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sum(endpoint.in_flight) == 0
    [trace] = h.traces(served)
    assert trace["status"] == 499 and "cancelled" in trace["error"]


def test_a_client_that_closes_on_done_has_its_answer_traced_whole(served, fake, h):
    """Clients close the connection on [DONE]; an upstream whose body ends a moment later (as a
    worker's did) must not turn a delivered answer into a 499 with no tokens."""
    fake.configure(done_tail_s=0.5, tokens=3)
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    headers = {"Authorization": f"Bearer {h.ADMIN_KEY}"}
    with httpx.stream("POST", served.url + "/chat/completions", json=body, headers=headers) as r:
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break  # and close, as the openai SDK does
    [trace] = h.traces(served)  # once the upstream's body has ended and the call submitted its trace
    assert trace["status"] == 200 and not trace["error"] and trace["completion_tokens"] > 0


def test_corral_costs_prints_the_totals_of_served_requests(served, h, capsys):
    import json

    from corral.cli.main import main

    for _ in range(2):
        h.chat(h.client(served))
    assert served.gateway.flush_traces()
    with pytest.raises(SystemExit) as info:
        main(["costs", "--by", "key,model", "--json"])
    out = capsys.readouterr().out
    assert info.value.code in (0, None)
    assert json.loads(out) == [
        {
            "key": "admin",
            "model": "m",
            "requests": 2,
            "prompt_tokens": 4,
            "completion_tokens": 8,
            "cost_usd": pytest.approx(0.02),
        }
    ]


def test_the_admin_key_comes_from_the_variable_auth_admin_key_env_names(gateway, fake, h, monkeypatch):
    monkeypatch.setenv("MY_ADMIN", "sk-from-my-variable")
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, auth={"admin_key_env": "MY_ADMIN"})
    with gateway(settings) as gw:
        assert h.chat(h.client(gw, key="sk-from-my-variable")).choices
        with pytest.raises(openai.AuthenticationError):
            h.chat(h.client(gw))  # CORRAL_ADMIN_KEY is not the admin key here


def test_a_runaway_prompt_template_or_a_self_variable_is_a_400_not_a_500(served, fake, h):
    served.gateway.registry.prompts.register("loop", {"text": "{% for i in range(n) %}x{% endfor %}"})
    c = h.client(served)
    for variables in ({"n": 10**12}, {"n": 2, "self": "me"}):
        try:
            c.completions.create(
                model="m", prompt="", extra_body={"corral": {"prompt": "loop", "variables": variables}}
            )
            status = 200
        except openai.BadRequestError as exc:
            status = exc.status_code
            assert "prompt loop@1" in exc.message
        assert status == (400 if variables["n"] > 2 else 200)


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        (
            "/v1/chat/completions",
            {"model": 5, "messages": [{"role": "user", "content": "x"}]},
            "`model` must be a string, not int",
        ),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "`model` is required"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user"}]},
            "`messages[0].content` is required",
        ),
        ("/v1/completions", {"model": "m", "prompt": []}, "non-empty list"),
        ("/v1/embeddings", {"model": "m", "input": []}, "non-empty list"),
    ],
)
def test_malformed_requests_are_400s_that_name_the_field(served, fake, h, path, body, says):
    r = httpx.post(served.base_url + path, json=body, headers={"Authorization": f"Bearer {h.ADMIN_KEY}"})
    assert r.status_code == 400 and says in r.json()["error"]["message"], r.text
    assert fake.count == 0  # refused before any upstream saw it


def test_an_assistant_turn_with_tool_calls_needs_no_content(served, fake, h):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert h.client(served).chat.completions.create(model="m", messages=messages).choices
