"""Tool calling and structured outputs: OpenAI's `tools`/`tool_choice`/`response_format` to a grammar, and back.

A tool call is written the way the chat template shows it to the model (Hermes/Qwen style):
`<tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>`. `required` and a named function
force one call by grammar; `auto` lets the model write free text or calls, each call held to its
function's schema once `<tool_call>` starts it; `none` leaves the tools in the prompt only.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.data.tokenizer import template_tool_call
from corral.engine.guided import GrammarBook, literal, schema_grammar
from corral.errors import InvalidInputError

CALL_OPEN, CALL_CLOSE = "<tool_call>\n", "\n</tool_call>"
_CALLS = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class FunctionDef(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


def _call_grammar(fn: FunctionDef) -> Any:
    import xgrammar as xgr

    head = literal(f'{{"name": {json.dumps(fn.name)}, "arguments": ')
    return xgr.Grammar.concat(head, schema_grammar(fn.parameters), literal("}"))


def tool_grammar(book: GrammarBook, tools: list[Tool], choice: ToolChoice) -> Any:
    """The compiled grammar for this tool choice, or None where the output is free (`none`)."""
    import xgrammar as xgr

    if choice == "none":
        return None
    if isinstance(choice, NamedToolChoice):
        chosen = [t.function for t in tools if t.function.name == choice.function.name]
        if not chosen:
            raise InvalidInputError(f"tool_choice names '{choice.function.name}', which is not in 'tools'")
    else:
        chosen = [t.function for t in tools]
    if choice == "auto":
        tags = [
            xgr.StructuralTagItem(
                begin=f'{CALL_OPEN}{{"name": {json.dumps(fn.name)}, "arguments": ',
                schema=json.dumps(fn.parameters),
                end="}" + CALL_CLOSE,
            )
            for fn in chosen
        ]
        with book._lock:
            return book.compiler.compile_structural_tag(tags, [CALL_OPEN.strip()])
    calls = [_call_grammar(fn) for fn in chosen]
    body = calls[0] if len(calls) == 1 else xgr.Grammar.union(*calls)
    return book.compile(xgr.Grammar.concat(literal(CALL_OPEN), body, literal(CALL_CLOSE)))


def response_grammar(book: GrammarBook, fmt: ResponseFormat) -> Any:
    if fmt.type == "json_object":
        return book.json_object()
    if fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise InvalidInputError("'response_format' of type json_schema needs 'json_schema'")
        return book.json_schema(fmt.json_schema.schema_)
    return None


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_calls(text: str, names: set[str]) -> tuple[str, list[dict[str, Any]]]:
    """Split generated text into (content outside calls, OpenAI tool_calls); malformed calls stay text."""
    calls, kept, last = [], [], 0
    for match in _CALLS.finditer(text):
        try:
            obj = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get("name") not in names:
            continue
        args = obj.get("arguments", {})
        kept.append(text[last : match.start()])
        last = match.end()
        calls.append(
            {
                "id": new_call_id(),
                "type": "function",
                "function": {
                    "name": obj["name"],
                    "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
                },
            }
        )
    kept.append(text[last:])
    return "".join(kept).strip() if calls else text, calls


@dataclass
class ToolStream:
    """Streamed content with tool calls held back: text that may start a call waits until it is known."""

    names: set[str]
    text: str = ""
    emitted: int = 0
    in_call: bool = False

    def feed(self, delta: str) -> str:
        """Content safe to send now."""
        self.text += delta
        if self.in_call:
            return ""
        at = self.text.find("<tool_call>", self.emitted)
        if at != -1:
            self.in_call = True
            end = at
        else:
            end = len(self.text) - _open_prefix(self.text)
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """The content not yet sent and the calls, once the choice ended."""
        rest = self.text[self.emitted :]
        content, calls = parse_calls(rest, self.names)
        return (content, calls) if calls else (rest, [])


def _open_prefix(text: str) -> int:
    """How many trailing characters of `text` could be the start of '<tool_call>'."""
    tag = "<tool_call>"
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def template_messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Messages as chat templates take them: tool calls with parsed arguments, tool results by id."""
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        extra = m.model_extra or {}
        if extra.get("tool_calls"):
            msg["tool_calls"] = [_template_call(c) for c in extra["tool_calls"]]
        if m.role == "tool" and extra.get("tool_call_id"):
            msg["tool_call_id"] = extra["tool_call_id"]
        out.append(msg)
    return out


def _template_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise InvalidInputError("each of an assistant message's 'tool_calls' needs a 'function' object")
    return template_tool_call(call)


def chat_message(text: str, reason: str, names: set[str] | None) -> tuple[dict[str, Any], str]:
    """The assistant message of a finished choice and its finish_reason (`tool_calls` when it called)."""
    if not names:
        return {"role": "assistant", "content": text}, reason
    content, calls = parse_calls(text, names)
    if not calls:
        return {"role": "assistant", "content": text}, reason
    message = {"role": "assistant", "content": content or None, "tool_calls": calls}
    return message, "tool_calls" if reason == "stop" else reason


def streamed_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls as `delta.tool_calls` entries: each whole, with its index."""
    return [{"index": i, **call} for i, call in enumerate(calls)]
