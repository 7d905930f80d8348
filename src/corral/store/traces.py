"""The typed records the gateway writes: one trace per request (or shadow copy), one row per feedback.

They live beside the store's models so that every reader (the trace writer, the OTLP exporter,
`corral.data.traces`, monitoring, evaluation) shares one contract without importing the gateway.
A plain slotted dataclass: no dependency, cheap to build on the request path, and orjson
serializes it natively for the spool (measured: a msgspec Struct would add a dependency for no
gain the writer can feel, since the row dict is built on the writer thread either way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

EVAL_SOURCE = "eval"  # traces.meta.source of requests an evaluation sent (x-corral-source: eval)


@dataclass(slots=True)
class TraceRecord:
    """What one request did. Filled once by the gateway; `row()` is what the `traces` table stores."""

    KIND: ClassVar[str] = "trace"

    id: str
    at: datetime
    deployment: str
    endpoint: str  # chat | completions | embeddings
    status: int
    key_id: int | None = None
    key_name: str | None = None
    route: str = "-"
    model_version: str | None = None
    shadow_of: str | None = None
    prompt_ref: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    error: str | None = None
    stream: bool = False
    user: str | None = None
    session: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # Not stored: a price per 1k (prompt, completion) tokens and the local tokenizer, so the writer
    # can recount estimated tokens off the request path (and settle the cost with the same price).
    price_per_1k: tuple[float, float] | None = None
    tokenizer_dir: str | None = None

    @property
    def day(self) -> str:
        return self.at.strftime("%Y-%m-%d")

    def settle(self, prompt_tokens: int, completion_tokens: int, estimated: bool) -> None:
        """Set the token counts and the cost they come to: the one place a trace's cost is computed."""
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens
        self.tokens_estimated = estimated
        if self.price_per_1k is None or self.status >= 400:
            self.cost_usd = 0.0
        else:
            prompt, completion = self.price_per_1k
            self.cost_usd = (prompt_tokens * prompt + completion_tokens * completion) / 1000

    def recount(
        self, count: Callable[[dict[str, Any] | None, dict[str, Any] | None], tuple[int, int] | None]
    ) -> None:
        """Exact counts from a tokenizer replace the estimate (called by the writer, never on the request path).

        A refused request (billed nothing) keeps its estimate, as does one the counter declines (None).
        """
        if self.tokens_estimated and self.status < 400:
            counted = count(self.request, self.response)
            if counted is not None:
                self.settle(*counted, estimated=False)

    def drop_bodies(self) -> None:
        self.request = None
        self.response = None

    def row(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in ROW_FIELDS}
        out["day"] = self.day
        return out

    @classmethod
    def from_row(cls, row: Any) -> TraceRecord:
        """A record from a stored `TraceRow` (what `corral.data.traces`, monitoring and evaluation read)."""
        return cls(**{name: getattr(row, name) for name in ROW_FIELDS})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        """A record from a stored row or a spooled line (unknown keys, such as `day`, are ignored)."""
        known = {k: v for k, v in data.items() if k in ALL_FIELDS[cls.KIND]}
        if isinstance(known.get("price_per_1k"), list):
            known["price_per_1k"] = tuple(known["price_per_1k"])
        return cls(**known)


@dataclass(slots=True)
class FeedbackRecord:
    """A score a client gave a traced answer (POST /v1/feedback)."""

    KIND: ClassVar[str] = "feedback"

    id: str
    trace_id: str
    score: float
    label: str | None = None
    comment: str | None = None
    key_id: int | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source: str = "user"  # people's feedback; online evaluation stores judge:<rubric> itself
    correction: str | None = None  # the answer that should have been given

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ALL_FIELDS[self.KIND]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeedbackRecord:
        return cls(**{k: v for k, v in data.items() if k in ALL_FIELDS[cls.KIND]})


Record = TraceRecord | FeedbackRecord
KINDS: dict[str, type[TraceRecord] | type[FeedbackRecord]] = {
    "trace": TraceRecord,
    "feedback": FeedbackRecord,
}
ALL_FIELDS = {kind: frozenset(f.name for f in fields(cls)) for kind, cls in KINDS.items()}
ROW_FIELDS = tuple(f.name for f in fields(TraceRecord) if f.name not in ("price_per_1k", "tokenizer_dir"))


def record_from_dict(data: dict[str, Any]) -> Record:
    """A spooled line back into its record: its `kind` names the class."""
    return KINDS[data.get("kind", "trace")].from_dict(data)
