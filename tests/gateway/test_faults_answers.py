"""Odd upstream answers (#16 items 7, 16, 17): finishing never loses the trace nor changes the status, a
200 that is not JSON is an upstream failure, and a deployment a key may not use reads as missing."""

from __future__ import annotations

import httpx


def _post(gw, body: dict, key: str) -> httpx.Response:  # type: ignore[no-untyped-def, type-arg]
    return httpx.post(
        f"{gw.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_finishing_never_loses_the_trace_nor_turns_a_status_into_a_500(gateway, fake, h):
    fake.configure(usage_override={"prompt_tokens": -5, "completion_tokens": -7})  # Prometheus refuses < 0
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        numeric_text = [{"role": "user", "content": [{"type": "text", "text": 5}]}]
        answer = _post(gw, {"model": "m", "messages": numeric_text}, h.ADMIN_KEY)
        assert answer.status_code == 200
        fake.configure(fault="status", fault_status=503)
        failed = _post(gw, {"model": "m", "messages": numeric_text}, h.ADMIN_KEY)
        assert failed.status_code == 502  # every route failed: not a 500 from finishing
        stored = {t["id"]: t for t in h.traces(gw)}
        assert answer.headers["x-corral-trace-id"] in stored and failed.headers["x-corral-trace-id"] in stored
        ok = stored[answer.headers["x-corral-trace-id"]]
        assert ok["status"] == 200 and ok["tokens_estimated"] and ok["prompt_tokens"] >= 0


def test_a_200_that_is_not_json_is_an_upstream_failure_and_falls_back(gateway, fake, fake_b, h):
    settings = h.settings({"m": {"routes": [h.url_route(fake)], "fallbacks": [h.url_route(fake_b)]}})
    with gateway(settings) as gw:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for fault in ("html", "not_json"):
            fake.configure(fault=fault)
            answer = _post(gw, body, h.ADMIN_KEY)
            assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].startswith(
                "b:"
            )
        fake_b.configure(fault="html")
        answer = _post(gw, body, h.ADMIN_KEY)
        assert answer.status_code == 502 and "not JSON" in answer.json()["error"]["message"]


def test_a_deployment_the_key_may_not_use_reads_as_missing(gateway, fake, h):
    settings = h.settings({"a": {"routes": [h.url_route(fake)]}, "secret": {"routes": [h.url_route(fake)]}})
    with gateway(settings) as gw, h.admin(gw) as api:
        key = api.post("/admin/keys", json={"name": "k", "models": ["a"]}).json()["key"]
        messages = [{"role": "user", "content": "hi"}]
        hidden = _post(gw, {"model": "secret", "messages": messages}, key)
        missing = _post(gw, {"model": "nosuch", "messages": messages}, key)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"].replace("secret", "X") == missing.json()["error"][
            "message"
        ].replace("nosuch", "X")


def _stream_lines(gw, body: dict, out: list) -> None:  # type: ignore[no-untyped-def, type-arg]
    headers = {"Authorization": "Bearer sk-test-admin-key"}
    try:
        with httpx.stream(
            "POST", f"{gw.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as answer:
            out.append(answer.headers.get("x-corral-trace-id"))
            for line in answer.iter_lines():
                out.append(line)
    except httpx.HTTPError as exc:
        out.append(f"broken: {exc}")


def test_a_request_ends_at_the_total_request_time_however_fast_its_stream_drips(gateway, fake, h):
    fake.configure(tokens=40, token_delay_s=0.1)
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, gateway={"request_timeout_s": 1.0})
    with gateway(settings) as gw:
        lines: list = []  # type: ignore[type-arg]
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        _stream_lines(gw, body, lines)
        assert any("request_timeout_s" in str(line) for line in lines), lines[-3:]
        assert "data: [DONE]" not in lines
        fake.configure(latency_s=3)
        slow = _post(gw, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, h.ADMIN_KEY)
        assert slow.status_code == 504
        stored = {t["id"]: t for t in h.traces(gw)}
        assert stored[lines[0]]["status"] == 504


def test_a_stream_cut_by_the_drain_gets_an_error_event_and_is_not_traced_as_a_disconnect(gateway, fake, h):
    import threading
    import time

    fake.configure(tokens=60, token_delay_s=0.1)
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, gateway={"drain_timeout_s": 1})
    lines: list = []  # type: ignore[type-arg]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with gateway(settings) as gw:
        reader = threading.Thread(target=_stream_lines, args=(gw, body, lines))
        reader.start()
        time.sleep(0.5)
    reader.join(10)
    assert any("drain timeout" in str(line) for line in lines), lines[-3:]
    trace = [t for t in h.traces(gw) if t["id"] == lines[0]]
    assert trace and trace[0]["status"] == 503


def test_large_answers_stream_through_and_large_bodies_are_not_stored(gateway, fake, h):
    fake.configure(answer_bytes=3_000_000)
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}}, tracing={"max_body_kb": 64})
    with gateway(settings) as gw:
        big_prompt = "y" * 100_000
        answer = _post(gw, {"model": "m", "messages": [{"role": "user", "content": big_prompt}]}, h.ADMIN_KEY)
        assert answer.status_code == 200
        assert len(answer.json()["choices"][0]["message"]["content"]) >= 2_999_000  # all of it, intact
        trace = h.traces(gw)[0]
        assert trace["response"]["truncated"] and trace["response"]["bytes"] > 3_000_000
        assert trace["request"] == {"truncated": True, "bytes": trace["request"]["bytes"]}
        fake.configure(answer_bytes=0)
        small = _post(gw, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, h.ADMIN_KEY)
        assert small.status_code == 200 and h.traces(gw)[-1]["response"]["choices"]
