"""The OpenAI wire format: check request bodies into engine parameters, and build responses and chunks."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corral.engine.llm_engine import StepOutput
from corral.engine.sampler import Sample
from corral.engine.sequence import SamplingParams
from corral.engine.tools import ResponseFormat, Tool, ToolChoice
from corral.errors import InvalidInputError

# Fields OpenAI defines that a local model cannot honour yet: named in a 400 rather than ignored.
UNSUPPORTED = (
    "functions",
    "function_call",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
    "suffix",
    "best_of",
)
HARMLESS_DEFAULTS: dict[str, Any] = {"logit_bias": {}}


# strict: a wrong JSON type ("10" for an int, true for a number) is a 400, as OpenAI answers it
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    max_tokens: int | None = Field(default=None, ge=0)  # 0: score the prompt only (completions with echo)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)  # vLLM's extras, which evaluation clients send
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    user: str | None = None  # accepted and ignored, as are the next three
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    def sampling(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=[s for s in stop if s],
            ignore_eos=self.ignore_eos,
            logprobs=logprobs,
            min_tokens=min(self.min_tokens, max_tokens),
            prompt_logprobs=self.prompt_logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _content_given(self) -> Message:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs `content`")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True  # accepted; a forced choice writes one call
    response_format: ResponseFormat | None = None

    @property
    def tool_mode(self) -> ToolChoice | None:
        """How tools constrain the answer: None without tools, else OpenAI's choice (auto by default)."""
        if not self.tools:
            if self.tool_choice not in (None, "none"):
                raise InvalidInputError("'tool_choice' needs 'tools'")
            return None
        return self.tool_choice or "auto"

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @model_validator(mode="after")
    def _at_least_one_token(self) -> ChatRequest:
        for name in ("max_tokens", "max_completion_tokens"):
            if getattr(self, name) == 0:
                raise ValueError(f"`{name}` must be at least 1 for chat (got 0)")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("`top_logprobs` needs `logprobs: true`")
        return self


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False

    @model_validator(mode="after")
    def _zero_tokens_only_with_echo(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("`max_tokens` must be at least 1; 0 (score the prompt only) needs `echo: true`")
        return self

    @property
    def score_only(self) -> bool:
        """`echo` with `max_tokens: 0`: the prompt (and its logprobs) back, nothing generated (vLLM's)."""
        return self.max_tokens == 0

    def sampling(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        params = super().sampling(max_tokens, logprobs)
        if self.echo and logprobs is not None:
            params.prompt_logprobs = max(params.prompt_logprobs or 0, logprobs)
        return params


def parse(cls: type[_Request], body: Any) -> Any:
    """Validate a JSON body, turning every problem into a 400 that names the field."""
    if not isinstance(body, dict):
        raise InvalidInputError("the request body must be a JSON object")
    for name in UNSUPPORTED:
        if name in body and body[name] is not None and body[name] != HARMLESS_DEFAULTS.get(name, object()):
            raise InvalidInputError(f"'{name}' is not supported by this worker", hint="remove the field")
    # OpenAI's optional fields are nullable: null means "the default", as if the field were absent;
    # so does an unsupported field at its harmless default (response_format text, echo false)
    body = {
        k: v
        for k, v in body.items()
        if v is not None and not (k in HARMLESS_DEFAULTS and v == HARMLESS_DEFAULTS[k])
    }
    try:
        return cls.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            raise InvalidInputError(f"unrecognized request argument '{field}'") from None
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across fields: its message names them
            raise InvalidInputError(f"invalid request: {message}") from None
        raise InvalidInputError(f"invalid '{field}': {message} (got {err.get('input')!r})") from None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class TokenText:
    """Token ids as the strings and bytes OpenAI's logprobs show."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def token(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def chat_entry(self, sample: Sample) -> dict[str, Any]:
        def one(token_id: int, logprob: float) -> dict[str, Any]:
            text = self.token(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        entry = one(sample.token_id, sample.logprob if sample.logprob is not None else 0.0)
        entry["top_logprobs"] = [one(t, lp) for t, lp in sample.top_logprobs]
        return entry

    def chat_logprobs(self, samples: list[Sample]) -> dict[str, Any] | None:
        return {"content": [self.chat_entry(s) for s in samples]} if samples else None

    def completion_logprobs(self, samples: list[Sample], offset: int = 0) -> dict[str, Any] | None:
        if not samples:
            return None
        tokens = [self.token(s.token_id) for s in samples]
        offsets = []
        for t in tokens:
            offsets.append(offset)
            offset += len(t)
        return {
            "tokens": tokens,
            "token_logprobs": [s.logprob for s in samples],
            "top_logprobs": [{self.token(t): lp for t, lp in s.top_logprobs} for s in samples],
            "text_offset": offsets,
        }

    def prompt_entries(self, seq: Any) -> list[dict[str, Any] | None]:
        """vLLM's `prompt_logprobs`: per prompt position, {token id: {logprob, decoded_token}}, None first."""
        out: list[dict[str, Any] | None] = [None]
        for token, logprob, top in seq.prompt_logprobs[1:]:
            entry = {str(t): {"logprob": lp, "decoded_token": self.token(t)} for t, lp in top}
            entry[str(token)] = {"logprob": logprob, "decoded_token": self.token(token)}
            out.append(entry)
        return out

    def echoed(self, seq: Any, samples: list[Sample], text: str) -> tuple[str, dict[str, Any] | None]:
        """A completion with its prompt in front (`echo`), and logprobs over both when asked for."""
        prompt = str(self.tokenizer.decode(seq.token_ids[: seq.num_prompt_tokens])) if self.tokenizer else ""
        if seq.params.logprobs is None:
            return prompt + text, None
        head = [Sample(t, lp, top) for t, lp, top in seq.prompt_logprobs[1:]]
        first = Sample(seq.token_ids[0], None, [])
        lp = self.completion_logprobs([first, *head, *samples]) or {}
        lp["top_logprobs"][0] = None
        return prompt + text, lp


def chunk(kind: str, rid: str, model: str, created: int, choice: dict[str, Any]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice]}


def stream_choice(kind: str, index: int, out: StepOutput, logprobs: Any) -> dict[str, Any]:
    if kind == "chat":
        return {
            "index": index,
            "delta": {"content": out.text} if out.text else {},
            "logprobs": logprobs,
            "finish_reason": out.finish_reason,
        }
    return {"index": index, "text": out.text, "logprobs": logprobs, "finish_reason": out.finish_reason}


def now() -> int:
    return int(time.time())
