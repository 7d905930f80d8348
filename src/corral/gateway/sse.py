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
            if choice.get("finish_reason"):
                self.finish[index] = choice["finish_reason"]
        return chunk

    def as_response(self, kind: str) -> dict[str, Any]:
        """The stream folded into the shape of a non-streaming response, for the trace."""
        choices = []
        for index in sorted(set(self.text) | set(self.finish)):
            content = "".join(self.text.get(index, []))
            body: dict[str, Any] = (
                {"message": {"role": "assistant", "content": content}}
                if kind == "chat"
                else {"text": content}
            )
            choices.append({"index": index, **body, "finish_reason": self.finish.get(index)})
        return {"id": self.id, "model": self.model, "choices": choices, "usage": self.usage}

    def completion_text(self) -> str:
        return "".join("".join(parts) for parts in self.text.values())


def is_usage_only(chunk: dict[str, Any] | None) -> bool:
    """The extra final chunk that `stream_options.include_usage` adds: usage and no choices."""
    return bool(chunk) and not chunk.get("choices") and chunk.get("usage") is not None  # type: ignore[union-attr]
