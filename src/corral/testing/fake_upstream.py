"""A fake OpenAI-compatible upstream with settable latency, faults, streaming and usage.

In process::

    with FakeUpstream(name="a", latency_s=0.01).running() as fake:
        client = openai.OpenAI(base_url=fake.url, api_key="x")

or as a server: ``python -m corral.testing.fake_upstream --port 8001 --name a``. Settings can be
changed while it runs with ``fake.configure(...)`` or ``POST /_fake/config``; ``GET /_fake/requests``
returns the bodies it received.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass
class FakeSettings:
    name: str = "fake"
    latency_s: float = 0.0  # before the answer (or the first chunk)
    token_delay_s: float = 0.0  # between stream chunks
    done_tail_s: float = 0.0  # after a stream's [DONE], before its body ends (the client may close first)
    tokens: int = 4  # words in an answer
    usage: bool = True  # false: never report usage, as some servers do
    fault: str = (
        "none"  # none | status | reset | hang | html (a 200 HTML page) | not_json (a 200 cut-off body)
    )
    fault_status: int = 500
    fail_next: int = 0  # the next N requests fail with `fault` (or status when fault is none), then it heals
    record: bool = True
    usage_override: dict[str, Any] | None = None  # reported instead of the real usage (e.g. negative counts)
    answer_bytes: int = 0  # pad a non-streamed answer's text to about this many bytes
    models: list[str] = field(default_factory=lambda: ["fake-model"])
    answer: str | None = None  # a fixed answer instead of words; "{prompt}" becomes the last user text
    chunk_chars: int = 0  # stream a fixed answer in pieces of this many characters (0: by word)
    # In process only: the answer text for a request body, instead of "<name>: w0 w1 ..."; may return
    # None to hang (a timeout), for judges and probes whose answer depends on the prompt.
    reply: Callable[[dict[str, Any]], str | None] | None = field(default=None, repr=False)
    healthy: bool = True  # false: GET /health answers 503 (a worker that stopped answering probes)
    tool_calls: bool = False  # true: a chat request with `tools` is answered by a call of the first tool
    # POST /v1/moderations (a guard classifier route): category -> lower-case phrases that flag it
    moderation_terms: dict[str, list[str]] = field(default_factory=dict)


def _answer_pieces(settings: FakeSettings, body: dict[str, Any]) -> list[str]:
    """The answer as the pieces a stream sends (joined, the whole answer)."""
    if settings.reply is not None:
        text = settings.reply(body) or ""
        words = text.split(" ") if text else []
    elif settings.answer is None:
        words = [f"{settings.name}:"] + [f"w{i}" for i in range(max(0, settings.tokens - 1))]
    else:
        given = body.get("messages")
        messages: list[Any] = given if isinstance(given, list) else []
        last = next((m.get("content") for m in reversed(messages) if isinstance(m, dict)), body.get("prompt"))
        text = settings.answer.replace("{prompt}", last if isinstance(last, str) else "")
        if settings.chunk_chars:
            return [text[i : i + settings.chunk_chars] for i in range(0, len(text), settings.chunk_chars)]
        words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _tool_call(body: dict[str, Any], words: list[str]) -> dict[str, Any] | None:
    """A call of the first tool the request offers, with the answer words as its `query` argument."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    name = (tools[0].get("function") or {}).get("name", "tool")
    arguments = orjson.dumps({"query": "".join(words)}).decode()
    return {"id": "call_fake_1", "type": "function", "function": {"name": name, "arguments": arguments}}


def _word_deltas(kind: str, words: list[str]) -> list[dict[str, Any]]:
    """The answer streamed a piece a chunk (the role in the first), `stop` in the last."""
    out: list[dict[str, Any]] = []
    for index, piece in enumerate(words):
        if kind == "chat":
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            out.append({"index": 0, "delta": delta, "finish_reason": None})
        else:
            out.append({"index": 0, "text": piece, "finish_reason": None})
    if out:
        out[-1]["finish_reason"] = "stop"
    return out


def _tool_call_deltas(call: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool call streamed as OpenAI does: id and name first, then the arguments in two fragments."""
    args = call["function"]["arguments"]
    half = len(args) // 2
    first = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "tool_calls": [first]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]},
    ]
    out = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
    return [*out, {"index": 0, "delta": {}, "finish_reason": "tool_calls"}]


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if isinstance(messages, list):
        return sum(len(str(m.get("content", "")).split()) + 1 for m in messages if isinstance(m, dict))
    prompt = body.get("prompt", body.get("input", ""))
    return max(1, len(str(prompt).split()))


class FakeUpstream:
    """The fake server. `url` is its OpenAI base URL (ending in /v1) once started."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **settings: Any) -> None:
        self.host, self.port = host, port
        self.settings = FakeSettings(**settings)
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def configure(self, **changes: Any) -> None:
        for key, value in changes.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"unknown fake setting {key!r}")
            setattr(self.settings, key, value)

    # -- server ----------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/moderations", self._moderations)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_post("/_fake/config", self._config)
        app.router.add_get("/_fake/requests", self._requests)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        site = web.SockSite(self._runner, sock)
        await site.start()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @contextmanager
    def running(self) -> Iterator[FakeUpstream]:
        """Run on a background thread with its own event loop (for synchronous tests)."""
        started = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        thread = threading.Thread(target=serve, name=f"fake-upstream-{self.settings.name}", daemon=True)
        thread.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    # -- handlers --------------------------------------------------------------------------------------
    async def _receive(self, request: web.Request) -> tuple[dict[str, Any], web.StreamResponse | None]:
        body = orjson.loads(await request.read())
        self.count += 1
        s = self.settings
        if s.record:
            self.requests.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        if s.latency_s:
            await asyncio.sleep(s.latency_s)
        failing = s.fault != "none" or s.fail_next > 0
        if s.fail_next > 0:
            s.fail_next -= 1
        if not failing:
            return body, None
        if s.fault == "reset":
            if request.transport is not None:
                request.transport.abort()
            return body, web.Response(status=500)
        if s.fault == "hang":
            await asyncio.sleep(3600)
        if s.fault == "html":
            return body, web.Response(
                status=200, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if s.fault == "not_json":
            return body, web.Response(
                status=200, body=b'{"choices": [{"mess', content_type="application/json"
            )
        message = {
            "error": {
                "message": f"{s.name} fails on purpose",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return body, web.json_response(
            message, status=s.fault_status, dumps=lambda o: orjson.dumps(o).decode()
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completions")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        body, failure = await self._receive(request)
        if failure is not None:
            return failure
        if self.settings.reply is not None and self.settings.reply(body) is None:
            await asyncio.sleep(3600)  # the reply asked for a hang
        words = _answer_pieces(self.settings, body)
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": len(words), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.settings.usage_override is not None:
            usage = self.settings.usage_override
        model = body.get("model", "fake-model")
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{self.count}"
        call = _tool_call(body, words) if self.settings.tool_calls and kind == "chat" else None
        if body.get("stream"):
            deltas = _tool_call_deltas(call) if call is not None else _word_deltas(kind, words)
            return await self._stream(request, kind, rid, model, deltas, usage, body)
        text = "".join(words)
        if self.settings.answer_bytes > len(text):
            text += " " + "x" * (self.settings.answer_bytes - len(text) - 1)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            if kind == "chat"
            else {"index": 0, "text": text, "finish_reason": "stop"}
        )
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        out: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
        }
        if self.settings.usage:
            out["usage"] = usage
        return web.Response(
            body=orjson.dumps(out),
            content_type="application/json",
            headers={"x-fake-name": self.settings.name},
        )

    async def _stream(
        self,
        request: web.Request,
        kind: str,
        rid: str,
        model: str,
        choices: list[dict[str, Any]],
        usage: dict[str, Any],
        body: dict[str, Any],
    ) -> web.StreamResponse:
        """One chunk per choice delta, then the usage chunk when asked for, then [DONE]."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "x-fake-name": self.settings.name}
        )
        await response.prepare(request)
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        for choice in choices:
            chunk = {"id": rid, "object": obj, "created": int(time.time()), "model": model}
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [choice]}) + b"\n\n")
            if self.settings.token_delay_s:
                await asyncio.sleep(self.settings.token_delay_s)
        options = body.get("stream_options") or {}
        if self.settings.usage and isinstance(options, dict) and options.get("include_usage"):
            final = {
                "id": rid,
                "object": obj,
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(b"data: " + orjson.dumps(final) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        if self.settings.done_tail_s:
            await asyncio.sleep(self.settings.done_tail_s)
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, failure = await self._receive(request)
        if failure is not None:
            return failure
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, float(i)]}
            for i in range(len(items))
        ]
        tokens = sum(max(1, len(str(x).split())) for x in items)
        out = {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _moderations(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's moderation answer: a category is flagged when an input contains one of its phrases."""
        body, failure = await self._receive(request)
        if failure is not None:
            return failure
        given = body.get("input")
        inputs = [given] if isinstance(given, str) else given if isinstance(given, list) else []
        results = []
        for text in inputs:
            lowered = str(text).lower()
            categories = {
                c: any(t in lowered for t in terms) for c, terms in self.settings.moderation_terms.items()
            }
            results.append(
                {
                    "flagged": any(categories.values()),
                    "categories": categories,
                    "category_scores": {c: float(on) for c, on in categories.items()},
                }
            )
        out = {
            "id": f"modr-{self.count}",
            "model": body.get("model") or "fake-moderation",
            "results": results,
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.settings.models]
        return web.json_response({"object": "list", "data": data})

    async def _health(self, request: web.Request) -> web.Response:
        status = 200 if self.settings.healthy else 503
        return web.json_response(
            {"status": "ok" if status == 200 else "down", "name": self.settings.name}, status=status
        )

    async def _config(self, request: web.Request) -> web.Response:
        try:
            self.configure(**(await request.json()))
        except TypeError as exc:
            return web.json_response(
                {"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400
            )
        return web.json_response({k: v for k, v in asdict(self.settings).items() if k != "reply"})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response({"count": self.count, "requests": [r["body"] for r in self.requests]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a fake OpenAI-compatible server for tests and benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--name", default="fake")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between stream chunks")
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--no-record", action="store_true", help="keep no request bodies (benchmarks)")
    # accepted so that it can stand in for `corral worker` in tests of `corral serve`
    parser.add_argument("--model", default=None)
    parser.add_argument("--embeddings", action="store_true", help="accepted; the fake always embeds")
    args = parser.parse_args(argv)
    models = [args.model] if args.model else ["fake-model"]
    fake = FakeUpstream(
        args.host,
        args.port,
        name=args.name,
        latency_s=args.latency,
        token_delay_s=args.token_delay,
        tokens=args.tokens,
        record=not args.no_record,
        models=models,
    )

    async def run() -> None:
        await fake.start()
        print(f"fake upstream {args.name} on {fake.url}", flush=True)
        await asyncio.Event().wait()

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(run())
        else:
            uvloop.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
