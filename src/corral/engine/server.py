"""The worker: an OpenAI-compatible HTTP app over one engine (chat, completions, models, embeddings).

Handlers parse and check the body (errors become OpenAI-style JSON with the right status), submit
one engine request per prompt and choice, and answer as JSON or as SSE chunks. A client that goes
away mid-request aborts its sequences, which frees their KV blocks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.engine import protocol as p
from corral.engine import tools
from corral.engine.async_engine import AsyncEngine
from corral.engine.chat_template import render_chat
from corral.engine.llm_engine import LLMEngine, StepOutput
from corral.engine.loader import load_tokenizer
from corral.engine.metrics import WorkerMetrics
from corral.errors import CorralError, InvalidInputError, NotFoundError, openai_error

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Worker:
    """What the handlers share: the engine, the names it answers to, and optional embeddings."""

    engine: LLMEngine
    names: list[str]
    embeddings: Any = None  # corral.engine.embeddings.EmbeddingModel
    created: int = field(default_factory=p.now)
    executor: ThreadPoolExecutor | None = None  # the engine_thread that built `engine`, to step it

    def __post_init__(self) -> None:
        self.metrics = WorkerMetrics(self.engine, self.names[0])
        self.front = AsyncEngine(self.engine, on_step=self.metrics.on_step, executor=self.executor)
        # the engine thread detokenizes with its own tokenizer; this copy serves the event loop
        self.tokenizer = (
            load_tokenizer(self.engine.loaded.path) if self.engine.tokenizer is not None else None
        )
        self.text = p.TokenText(self.tokenizer)
        if self.embeddings is not None:  # the version's reference names its embeddings too
            self.embeddings.names |= set(self.names)
        self._longest_token: int | None = None

    async def adapter_for(self, model: str) -> str | None:
        """None for the base's names; else the LoRA adapter `model` names, loaded off the loop if need be."""
        if model in self.names:
            return None
        try:
            return (await asyncio.to_thread(self.engine.adapters.get, model)).name
        except NotFoundError:
            served = ", ".join([*self.names, *self.engine.adapters.loaded])
            raise NotFoundError(
                f"model '{model}' is not served here",
                hint=f"this worker serves: {served} (and LoRA adapters over {self.names[0]})",
            ) from None

    def encode(self, text: str, special: bool) -> list[int]:
        if self.tokenizer is None:
            raise InvalidInputError("this worker has no tokenizer; send token ids to /v1/completions")
        return list(self.tokenizer.encode(text, add_special_tokens=special))

    def check_length(self, text: str) -> None:
        """Refuse, without tokenizing, text too long to fit the context whatever its tokens.

        No token covers more bytes than the longest one in the vocabulary, so text past
        `max_model_len` times that (doubled, for normalizers) cannot fit: a 10 MB prompt is a quick
        400 instead of seconds of tokenizing.
        """
        if self.tokenizer is None:
            return
        if self._longest_token is None:
            self._longest_token = max((len(t) for t in self.tokenizer.get_vocab()), default=1)
        limit = self.engine.max_model_len * self._longest_token * 2
        if len(text) > limit and len(text.encode("utf-8")) > limit:
            raise InvalidInputError(
                f"this model's maximum context length is {self.engine.max_model_len} tokens, and a prompt "
                f"of {len(text)} characters is longer than that in any tokenization",
                hint="shorten the prompt",
            )

    async def encode_off_loop(self, text: str, special: bool) -> list[int]:
        """Tokenize on a thread, so /health and other requests never wait on one long prompt."""
        self.check_length(text)
        return await asyncio.to_thread(self.encode, text, special)


def error_response(exc: CorralError) -> JSONResponse:
    """The same OpenAI error JSON and Retry-After as the gateway sends (corral.errors.openai_error)."""
    status, body, headers = openai_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def guarded(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except CorralError as exc:
            return error_response(exc)

    return run


async def read_json(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("the request body is not valid JSON") from None


async def _prompts(worker: Worker, req: p.CompletionRequest) -> list[list[int]]:
    prompt = req.prompt
    if isinstance(prompt, str):
        return [await worker.encode_off_loop(prompt, special=True)]
    if not prompt:
        raise InvalidInputError("invalid 'prompt': give a string, a list of strings or token ids, not []")
    if all(isinstance(x, int) for x in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return [
        await worker.encode_off_loop(x, special=True) if isinstance(x, str) else list(x)  # type: ignore[arg-type]
        for x in prompt
    ]


def _grammar(worker: Worker, req: p.ChatRequest) -> Any:
    """The compiled grammar a chat answer must follow (tools or response_format), or None."""
    mode = req.tool_mode
    fmt = req.response_format if req.response_format and req.response_format.type != "text" else None
    if mode not in (None, "none"):
        if fmt is not None and mode != "auto":
            raise InvalidInputError("'response_format' cannot be combined with a forced 'tool_choice'")
        if fmt is None or mode != "auto":
            return tools.tool_grammar(worker.engine.grammars, req.tools or [], mode)
    return tools.response_grammar(worker.engine.grammars, fmt) if fmt is not None else None


def _submit(
    worker: Worker,
    req: Any,
    prompts: list[list[int]],
    logprobs: int | None,
    grammar: Any = None,
    adapter: str | None = None,
) -> list[tuple[str, int]]:
    """Queue n choices per prompt; returns (request id, prompt length) per choice. All or nothing."""
    limit = worker.engine.max_model_len
    ids: list[tuple[str, int]] = []
    try:
        for prompt in prompts:
            if len(prompt) >= limit:
                raise InvalidInputError(
                    f"this model's maximum context length is {limit} tokens, but the prompt has {len(prompt)} tokens"
                )
            max_tokens = req.max_tokens if req.max_tokens is not None else limit - len(prompt)
            if isinstance(req, p.ChatRequest) and req.max_completion_tokens is not None:
                max_tokens = req.max_completion_tokens
            if _score_only(req):
                max_tokens = 1  # the prompt's logprobs come with the first step; its token is dropped
            for i in range(req.n):
                params = req.sampling(max_tokens, logprobs)
                params.grammar, params.adapter = grammar, adapter
                if params.seed is not None:
                    params.seed += i  # n seeded choices should differ from each other
                ids.append((worker.front.submit(prompt, params), len(prompt)))
    except CorralError:
        for rid, _ in ids:
            worker.front.abort(rid)
        raise
    return ids


async def merged(worker: Worker, ids: list[tuple[str, int]]) -> AsyncIterator[tuple[int, StepOutput]]:
    """Outputs of several requests as they come, tagged with the choice index; leaving early aborts all."""
    queue: asyncio.Queue[tuple[int, StepOutput] | BaseException | None] = asyncio.Queue()

    async def pump(index: int, rid: str) -> None:
        try:
            async for out in worker.front.stream(rid):
                queue.put_nowait((index, out))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            queue.put_nowait(exc)
        queue.put_nowait(None)

    tasks = [asyncio.create_task(pump(i, rid)) for i, (rid, _) in enumerate(ids)]
    done = 0
    try:
        while done < len(tasks):
            item = await queue.get()
            if item is None:
                done += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for rid, _ in ids:
            worker.front.abort(rid)


def _score_only(req: Any) -> bool:
    return isinstance(req, p.CompletionRequest) and req.score_only


def _prompt_tokens(req: Any, ids: list[tuple[str, int]]) -> int:
    """Each prompt counted once, as OpenAI does, however many choices (`n`) it has."""
    return sum(n for _, n in ids) // req.n


async def _collect(worker: Worker, kind: str, req: Any, ids: list[tuple[str, int]]) -> dict[str, Any]:
    texts = ["" for _ in ids]
    samples: list[list[Any]] = [[] for _ in ids]
    counts, reasons = [0] * len(ids), ["stop"] * len(ids)
    seqs: list[Any] = [None] * len(ids)
    async for index, out in merged(worker, ids):
        seqs[index] = out.seq
        if _score_only(req):
            out = _scored(out)
        texts[index] += out.text
        samples[index] += out.logprobs
        counts[index] += len(out.token_ids)
        if out.finished:
            reasons[index] = out.finish_reason or "stop"
    choices = []
    for i, text in enumerate(texts):
        if kind == "chat":
            lp = worker.text.chat_logprobs(samples[i])
            message, reason = tools.chat_message(text, reasons[i], _tool_names(req))
            choices.append({"index": i, "message": message, "logprobs": lp, "finish_reason": reason})
        else:
            lp = worker.text.completion_logprobs(samples[i])
            if req.echo and seqs[i] is not None:
                text, lp = worker.text.echoed(seqs[i], samples[i], text)
            choices.append({"index": i, "text": text, "logprobs": lp, "finish_reason": reasons[i]})
        if req.prompt_logprobs is not None and seqs[i] is not None:
            choices[-1]["prompt_logprobs"] = worker.text.prompt_entries(seqs[i])
    obj = "chat.completion" if kind == "chat" else "text_completion"
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return {
        "id": p.new_id(prefix),
        "object": obj,
        "created": p.now(),
        "model": req.model,
        "choices": choices,
        "usage": p.usage(_prompt_tokens(req, ids), sum(counts)),
    }


async def _until_disconnect(request: Request, work: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """Run `work`, or cancel it (aborting its sequences) if the client disconnects first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    job, watch = asyncio.ensure_future(work), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({job, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (job, watch):
            if not task.done():
                task.cancel()
    return job.result() if job.done() and not job.cancelled() else None


async def _sse(worker: Worker, kind: str, req: Any, ids: list[tuple[str, int]]) -> AsyncIterator[str]:
    rid, created = p.new_id("chatcmpl" if kind == "chat" else "cmpl"), p.now()
    completion_tokens = 0
    if kind == "chat":
        for i in range(len(ids)):
            first = {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            yield _data(p.chunk(kind, rid, req.model, created, first))
    names = _tool_names(req) if kind == "chat" else None
    held = [tools.ToolStream(names) for _ in ids] if names else None
    started: set[int] = set()
    try:
        async for index, out in merged(worker, ids):
            if _score_only(req):
                out = _scored(out)
            completion_tokens += len(out.token_ids)
            if kind == "chat":
                lp = worker.text.chat_logprobs(out.logprobs)
            else:
                lp = worker.text.completion_logprobs(out.logprobs)
            choice = p.stream_choice(kind, index, out, lp)
            if held is not None:
                _hold_calls(choice, held[index], out)
            if index not in started:
                started.add(index)
                _first_extras(worker, req, choice, out)
            if (choice["delta"] if kind == "chat" else choice["text"]) or out.finished or lp:
                yield _data(p.chunk(kind, rid, req.model, created, choice))
    except CorralError as exc:
        yield _data(exc.to_openai())
        return
    if req.include_usage:
        last = {
            "id": rid,
            "object": p.chunk(kind, rid, "", 0, {})["object"],
            "created": created,
            "model": req.model,
        }
        yield _data({**last, "choices": [], "usage": p.usage(_prompt_tokens(req, ids), completion_tokens)})
    yield "data: [DONE]\n\n"


def _scored(out: StepOutput) -> StepOutput:
    """A score-only request's one step without the token it had to sample: the prompt is the answer."""
    return replace(out, token_ids=[], text="", logprobs=[], finish_reason="length")


def _first_extras(worker: Worker, req: Any, choice: dict[str, Any], out: StepOutput) -> None:
    """A choice's first streamed chunk carries the echoed prompt and the prompt logprobs."""
    if getattr(req, "echo", False):
        choice["text"], lp = worker.text.echoed(out.seq, out.logprobs, choice["text"])
        choice["logprobs"] = lp if lp is not None else choice["logprobs"]
    if req.prompt_logprobs is not None:
        choice["prompt_logprobs"] = worker.text.prompt_entries(out.seq)


def _tool_names(req: Any) -> set[str] | None:
    """The function names a chat answer may call, or None where it answers in text only."""
    if not isinstance(req, p.ChatRequest) or req.tool_mode in (None, "none"):
        return None
    return {t.function.name for t in req.tools or []}


def _hold_calls(choice: dict[str, Any], held: tools.ToolStream, out: StepOutput) -> None:
    """Rewrite a streamed chat choice so tool calls arrive whole in `delta.tool_calls`."""
    content = held.feed(out.text)
    delta: dict[str, Any] = {"content": content} if content else {}
    if out.finished:
        tail, calls = held.finish()
        if tail:
            delta["content"] = delta.get("content", "") + tail
        if calls:
            delta["tool_calls"] = tools.streamed_calls(calls)
            if choice["finish_reason"] == "stop":
                choice["finish_reason"] = "tool_calls"
    choice["delta"] = delta


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def _answer(
    worker: Worker, request: Request, kind: str, req: Any, ids: list[tuple[str, int]]
) -> Response:
    if req.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _sse(worker, kind, req, ids), media_type="text/event-stream", headers=headers
        )
    body = await _until_disconnect(request, _collect(worker, kind, req, ids))
    return JSONResponse(body) if body is not None else Response(status_code=499)


def build_app(worker: Worker) -> Starlette:
    """The ASGI app; the engine loop starts and stops with it."""

    async def chat(request: Request) -> Response:
        req = p.parse(p.ChatRequest, await read_json(request))
        adapter = await worker.adapter_for(req.model)
        if worker.tokenizer is None:
            raise InvalidInputError("this worker has no tokenizer, so it cannot render chat messages")
        fns = [t.model_dump(by_alias=True, exclude_none=True) for t in req.tools or []] or None
        text = render_chat(worker.tokenizer, tools.template_messages(req.messages), fns)
        worker.check_length(text)
        prompt = await worker.encode_off_loop(text, special=False)
        grammar = await asyncio.to_thread(_grammar, worker, req)
        ids = _submit(worker, req, [prompt], req.logprob_count(), grammar, adapter)
        return await _answer(worker, request, "chat", req, ids)

    async def completions(request: Request) -> Response:
        req = p.parse(p.CompletionRequest, await read_json(request))
        adapter = await worker.adapter_for(req.model)
        ids = _submit(worker, req, await _prompts(worker, req), req.logprobs, adapter=adapter)
        return await _answer(worker, request, "completion", req, ids)

    async def models(_: Request) -> Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": worker.created,
                "owned_by": "corral",
                "root": str(worker.engine.loaded.path),
                "max_model_len": worker.engine.max_model_len,
            }
            for name in worker.names
        ]
        data += [  # adapters loaded now; others over this base load on their first request
            {
                "id": name,
                "object": "model",
                "created": worker.created,
                "owned_by": "corral",
                "parent": worker.names[0],
            }
            for name in worker.engine.adapters.loaded
        ]
        if worker.embeddings is not None:
            data += [
                {
                    "id": name,
                    "object": "model",
                    "created": worker.created,
                    "owned_by": "corral",
                    "root": str(worker.embeddings.path),
                }
                for name in sorted(worker.embeddings.names - set(worker.names))
            ]
        return JSONResponse({"object": "list", "data": data})

    async def health(_: Request) -> Response:
        e = worker.engine
        return JSONResponse(
            {
                "status": "ok",
                "model": worker.names[0],
                "waiting": len(e.scheduler.waiting) + worker.front.num_pending,
                "running": len(e.scheduler.running),
                "kv_blocks_used": e.block_manager.num_used_blocks,
                "kv_blocks_total": e.block_manager.num_blocks,
            }
        )

    async def metrics(_: Request) -> Response:
        return Response(worker.metrics.render(), media_type="text/plain; version=0.0.4")

    async def embeddings(request: Request) -> Response:
        if worker.embeddings is None:
            raise NotFoundError("this worker does not serve embeddings", hint="start it with --embeddings")
        return JSONResponse(await worker.embeddings.handle(await read_json(request)))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await worker.front.start()
        yield
        await worker.front.stop()

    routes = [
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
