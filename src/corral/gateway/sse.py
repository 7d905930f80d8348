"""Server-sent events from an upstream: split into events as bytes arrive, and read usage and text from them."""

from __future__ import annotations

from typing import Any

import orjson

DONE = b"[DONE]"


class EventSplitter:
    """Feed raw bytes, get back complete events (each with its trailing blank line) in order."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        events = data.split(b"\n\n")
        self._buffer = events.pop()
        return [event + b"\n\n" for event in events if event.strip()]

    def rest(self) -> bytes:
        rest, self._buffer = self._buffer, b""
        return rest


def event_data(event: bytes) -> bytes | None:
    """The `data:` payload of one event (several data lines joined), or None for comments and the like."""
    parts = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


class StreamSummary:
    """What a stream said, collected for the trace: text per choice, finish reasons, usage."""

    def __init__(self) -> None:
        self.text: dict[int, list[str]] = {}
        self.tool_calls: dict[int, dict[int, dict[str, Any]]] = {}  # choice → call index → the call so far
        self.finish: dict[int, str | None] = {}
        self.usage: dict[str, Any] | None = None
        self.id: str | None = None
        self.model: str | None = None
        self.done = False

    def observe(self, payload: bytes) -> dict[str, Any] | None:
        """Record one event's payload; returns the parsed chunk (None for [DONE] or non-JSON)."""
        if payload == DONE:
            self.done = True
            return None
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        self.id = self.id or chunk.get("id")
        self.model = self.model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta")
            piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if piece:
                self.text.setdefault(index, []).append(piece)
            if isinstance(delta, dict) and delta.get("tool_calls"):
                self._fold_tool_calls(index, delta["tool_calls"])
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]
        return chunk

    def _fold_tool_calls(self, choice: int, deltas: Any) -> None:
        """Tool calls arrive in pieces: the id, type and name once, the arguments as string fragments."""
        calls = self.tool_calls.setdefault(choice, {})
        for piece in deltas if isinstance(deltas, list) else ():
            if not isinstance(piece, dict):
                continue
            index = piece.get("index", len(calls))
            call = calls.setdefault(
                index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if piece.get("id"):
                call["id"] = piece["id"]
            if piece.get("type"):
                call["type"] = piece["type"]
            function = piece.get("function")
            if isinstance(function, dict):
                for field in ("name", "arguments"):
                    if isinstance(function.get(field), str):
                        call["function"][field] += function[field]

    @property
    def has_output(self) -> bool:
        """Whether the answer has begun: text or a tool call (for the time to first token)."""
        return bool(self.text or self.tool_calls)

    def as_response(self, kind: str) -> dict[str, Any]:
        """The stream folded into the shape of a non-streaming response, for the trace."""
        choices = []
        for index in sorted(set(self.text) | set(self.finish) | set(self.tool_calls)):
            content = "".join(self.text.get(index, []))
            body: dict[str, Any]
            if kind == "chat":
                message: dict[str, Any] = {"role": "assistant", "content": content}
                calls = self.tool_calls.get(index)
                if calls:
                    message["content"] = content or None
                    message["tool_calls"] = [calls[i] for i in sorted(calls)]
                body = {"message": message}
            else:
                body = {"text": content}
            choices.append({"index": index, **body, "finish_reason": self.finish.get(index)})
        return {"id": self.id, "model": self.model, "choices": choices, "usage": self.usage}

    def completion_text(self) -> str:
        return "".join("".join(parts) for parts in self.text.values())


def is_usage_only(chunk: dict[str, Any] | None) -> bool:
    """The extra final chunk that `stream_options.include_usage` adds: usage and no choices."""
    return bool(chunk) and not chunk.get("choices") and chunk.get("usage") is not None  # type: ignore[union-attr]
