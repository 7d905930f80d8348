"""The worker over real HTTP on a loopback port: the openai SDK, SSE, errors, overload, disconnects."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from corral.config import EngineSettings
from corral.engine.llm_engine import LLMEngine
from corral.engine.server import Worker, build_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningWorker:
    def __init__(self, worker: Worker) -> None:
        import uvicorn

        self.worker = worker
        self.port = free_port()
        config = uvicorn.Config(build_app(worker), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.worker.names[0]

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_worker(path: Any, **settings: Any) -> RunningWorker:
    engine = LLMEngine(path, EngineSettings(**{"kv_cache_gb": 0.001, **settings}))
    return RunningWorker(Worker(engine, ["tiny@1", str(path)]))


@pytest.fixture(scope="module")
def worker(tiny_model: Callable) -> Iterator[RunningWorker]:
    running = start_worker(tiny_model("llama"))
    yield running
    running.stop()


def wait_idle(w: RunningWorker, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(w.url + "/health").json()
        if health["running"] == 0 and health["waiting"] == 0:
            return dict(health)
        assert time.monotonic() < deadline, f"worker still busy: {health}"
        time.sleep(0.05)


def test_openai_sdk_gets_a_chat_answer(worker: RunningWorker) -> None:
    reply = worker.client().chat.completions.create(
        model="tiny@1", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage is not None and reply.usage.completion_tokens >= 1
    assert reply.model == "tiny@1"


def test_openai_sdk_streams_chat_with_usage_in_the_last_chunk(worker: RunningWorker) -> None:
    client = worker.client()
    kw: dict[str, Any] = {
        "model": "tiny@1",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 10,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}


def test_openai_sdk_completions_streaming_and_not(worker: RunningWorker) -> None:
    client = worker.client()
    reply = client.completions.create(
        model=worker.worker.names[1], prompt="The quick brown fox", max_tokens=6, temperature=0
    )
    pieces = client.completions.create(
        model="tiny@1", prompt="The quick brown fox", max_tokens=6, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in pieces) == reply.choices[0].text
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + 6


def test_n_seed_stop_and_logprobs_are_honoured(worker: RunningWorker) -> None:
    client = worker.client()
    kw: dict[str, Any] = {
        "model": "tiny@1",
        "prompt": "Once upon",
        "max_tokens": 8,
        "temperature": 1.0,
        "seed": 7,
    }
    a = client.completions.create(**kw, n=2)
    b = client.completions.create(**kw, n=2)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len(a.choices) == 2
    one = client.completions.create(**{**kw, "max_tokens": 1})
    assert a.usage is not None and one.usage is not None
    assert a.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counts once, whatever n is
    lp = client.completions.create(
        model="tiny@1", prompt="Once upon", max_tokens=3, temperature=0, logprobs=2
    )
    assert lp.choices[0].logprobs is not None and len(lp.choices[0].logprobs.token_logprobs or []) == 3
    chat = client.chat.completions.create(
        model="tiny@1",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=2,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    assert chat.choices[0].logprobs is not None and len(chat.choices[0].logprobs.content or []) == 2
    assert len((chat.choices[0].logprobs.content or [])[0].top_logprobs) == 3


def test_models_health_and_metrics(worker: RunningWorker) -> None:
    ids = [m.id for m in worker.client().models.list()]
    assert ids == worker.worker.names
    assert httpx.get(worker.url + "/health").json()["status"] == "ok"
    metrics = httpx.get(worker.url + "/metrics").text
    for name in [
        "corral_engine_requests_waiting",
        "corral_engine_requests_running",
        "corral_engine_kv_cache_usage",
        "corral_engine_prompt_tokens_per_second",
        "corral_engine_generation_tokens_per_second",
        "corral_engine_time_to_first_token_seconds_bucket",
        "corral_engine_request_latency_seconds_bucket",
    ]:
        assert name in metrics


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": "10"}, "max_tokens"),  # strict types, as OpenAI: no string-to-number coercion
        ({"temperature": True}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true, as OpenAI refuses it
        ({"tools": [{"type": "function", "function": {"name": "not a name"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"frobnicate": 1}, "frobnicate"),
        ({"messages": "hi"}, "messages"),
    ],
)
def test_bad_input_is_a_400_in_openai_format(
    worker: RunningWorker, body: dict[str, Any], needle: str
) -> None:
    full = {"model": "tiny@1", "messages": [{"role": "user", "content": "hi"}], **body}
    r = httpx.post(worker.url + "/v1/chat/completions", json=full)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"]


def test_prompt_longer_than_the_context_names_both_numbers(worker: RunningWorker) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        worker.client().completions.create(model="tiny@1", prompt=list(range(5, 305)), max_tokens=4)
    message = str(info.value)
    assert "256" in message and "300" in message


def test_unknown_model_and_bad_json(worker: RunningWorker) -> None:
    r = httpx.post(worker.url + "/v1/completions", json={"model": "other@1", "prompt": "x"})
    assert r.status_code == 404 and "tiny@1" in r.json()["error"]["message"]
    r = httpx.post(worker.url + "/v1/completions", content=b"{not json")
    assert r.status_code == 400


def test_a_non_streaming_client_that_hangs_up_aborts_its_request(worker: RunningWorker) -> None:
    engine = worker.worker.engine
    aborted_before = engine.stats.aborted
    body = {"model": "tiny@1", "prompt": "hang up", "max_tokens": 240, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(worker.url + "/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.05))
    health = wait_idle(worker)
    assert health["kv_blocks_used"] == 0
    assert engine.stats.aborted == aborted_before + 1


def test_full_queue_is_a_503_with_retry_after(tiny_model: Callable) -> None:
    w = start_worker(tiny_model("llama"), max_waiting=0)
    try:
        r = httpx.post(w.url + "/v1/completions", json={"model": "tiny@1", "prompt": "hi", "max_tokens": 2})
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["type"] == "overloaded_error"
    finally:
        w.stop()


async def _client(url: str, i: int, disconnect: bool) -> int:
    """Completion tokens streamed, or -1 for a client that hung up after three chunks."""
    body = {
        "model": "tiny@1",
        "prompt": f"client {i} says",
        "max_tokens": 24,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    chunks, completion_tokens = 0, 0
    async with (
        httpx.AsyncClient(timeout=120) as http,
        http.stream("POST", url + "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            chunks += 1
            if chunk.get("usage"):
                completion_tokens = chunk["usage"]["completion_tokens"]
            if disconnect and chunks == 3:
                return -1  # leaving the block closes the connection midway
    return completion_tokens


@pytest.mark.slow
def test_hundred_streaming_clients_with_a_third_disconnecting_leak_no_blocks(worker: RunningWorker) -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(_client(worker.url, i, i % 3 == 0) for i in range(100)))

    engine = worker.worker.engine
    aborted_before = engine.stats.aborted
    counts = asyncio.run(main())
    assert all(c == 24 for i, c in enumerate(counts) if i % 3)
    health = wait_idle(worker)
    assert health["kv_blocks_used"] == 0
    assert engine.block_manager.num_used_blocks == 0
    assert all(b.ref_count == 0 for b in engine.block_manager.blocks)
    assert engine.stats.aborted - aborted_before >= 1


def test_a_message_without_content_and_an_empty_prompt_list_are_400s(worker: RunningWorker) -> None:
    no_content = {"model": "tiny@1", "messages": [{"role": "user"}], "max_tokens": 2}
    r = httpx.post(worker.url + "/v1/chat/completions", json=no_content)
    assert r.status_code == 400 and "needs `content`" in r.json()["error"]["message"]
    r = httpx.post(worker.url + "/v1/completions", json={"model": "tiny@1", "prompt": [], "max_tokens": 2})
    assert r.status_code == 400 and "'prompt'" in r.json()["error"]["message"]


def test_a_prompt_too_long_for_any_tokenization_is_refused_without_tokenizing(worker: RunningWorker) -> None:
    calls: list[int] = []
    original = worker.worker.encode
    worker.worker.encode = lambda text, special: calls.append(len(text)) or original(text, special)  # type: ignore[method-assign]
    try:
        huge = "word " * 2_000_000  # 10 MB: far past the context, whatever the tokens
        body = {"model": "tiny@1", "messages": [{"role": "user", "content": huge}], "max_tokens": 2}
        r = httpx.post(worker.url + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
        assert calls == []  # refused before the tokenizer saw it
        assert httpx.get(worker.url + "/health").status_code == 200
    finally:
        worker.worker.encode = original  # type: ignore[method-assign]


def test_the_default_kv_cache_fits_every_sequence_at_full_context_up_to_a_cap() -> None:
    from corral.engine.llm_engine import kv_cache_blocks

    mib = 2**20
    # a small model: 64 sequences x 256 tokens in 16-token blocks, far under the cap
    assert kv_cache_blocks(mib // 64, 16, 256, 64, None) == 64 * 16
    # a big context: capped at 1 GiB
    assert kv_cache_blocks(mib, 16, 32768, 64, None) == 1024
    # an explicit size wins
    assert kv_cache_blocks(mib, 16, 256, 64, 0.5) == 512


def test_the_worker_steps_its_engine_on_the_thread_that_built_it(tiny_model: Callable) -> None:
    """Two threads running torch's parallel ops get two OpenMP teams: batch-1 decode was ~35% slower
    with the model packed on one thread and stepped on another (see corral.engine.async_engine)."""
    from corral.engine.async_engine import engine_thread

    thread = engine_thread()
    built = thread.submit(threading.get_ident).result()
    engine = thread.submit(LLMEngine, tiny_model("llama"), EngineSettings(kv_cache_gb=0.001)).result()
    stepped: set[int] = set()
    step = engine.step

    def recording_step() -> Any:
        stepped.add(threading.get_ident())
        return step()

    engine.step = recording_step  # type: ignore[method-assign]
    running = RunningWorker(Worker(engine, ["tiny@1"], executor=thread))
    try:
        answer = running.client().completions.create(model="tiny@1", prompt="hello", max_tokens=3)
        assert answer.choices[0].text is not None
    finally:
        running.stop()
    assert stepped == {built}
