"""Feedback on traces: strictly typed, one score per body, and only from the key that made the trace (or an admin).

Feedback becomes training data (`datasets from-traces --min-score`), so a key must not be able to
score another key's traces, nor invent trace ids, nor send a 1 MB comment.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from corral.errors import InvalidInputError, NotFoundError
from corral.gateway.auth import ApiKey
from corral.store import Store
from corral.store.models import TraceRow

TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_LABEL = 128
MAX_COMMENT = 4096
MAX_CORRECTION = 16_384  # the right answer, trained on as the target (`from-traces --use-corrections`)
RECENT_TRACES = 100_000  # trace ids this process made, kept to check feedback before they are stored


@dataclass(frozen=True)
class FeedbackInput:
    trace_id: str
    score: float
    label: str | None
    comment: str | None
    correction: str | None = None


def parse_feedback(body: dict[str, Any]) -> FeedbackInput:
    """A feedback body checked strictly: a trace id, exactly one of `score` (0 to 1) or `thumbs`, label,
    comment, and a `correction` (the answer that should have been given)."""
    trace = body.get("trace_id")
    if not isinstance(trace, str) or not TRACE_ID.match(trace):  # all zeros: no such trace, a 404
        raise InvalidInputError("`trace_id` must be the x-corral-trace-id of a response (32 hex characters)")
    score, thumbs = body.get("score"), body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise InvalidInputError('give one score: `score` from 0 to 1, or `thumbs`: "up" or "down"')
    if thumbs is not None:
        if thumbs not in ("up", "down"):
            raise InvalidInputError('`thumbs` must be "up" or "down"')
        score = 1.0 if thumbs == "up" else 0.0
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise InvalidInputError("`score` must be a number from 0 to 1 (true and false are not numbers)")
    label, comment = body.get("label"), body.get("comment")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
        raise InvalidInputError(f"`label` must be a string of at most {MAX_LABEL} characters")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidInputError(f"`comment` must be a string of at most {MAX_COMMENT} characters")
    correction = body.get("correction")
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        raise InvalidInputError("`correction` must be the right answer as a non-empty string")
    if correction is not None and len(correction) > MAX_CORRECTION:
        raise InvalidInputError(
            f"`correction` is {len(correction)} characters; at most {MAX_CORRECTION} are accepted",
            hint="send the answer the model should have given, not a document",
        )
    return FeedbackInput(trace, float(score), label, comment, correction)


@dataclass(frozen=True)
class TraceOwner:
    key_id: int | None
    deployment: str


class RecentTraces:
    """Who made the traces this process submitted lately: feedback may come before the trace is stored."""

    def __init__(self, size: int = RECENT_TRACES) -> None:
        self.size = size
        self._owners: OrderedDict[str, TraceOwner] = OrderedDict()

    def remember(self, trace_id: str, key_id: int | None, deployment: str) -> None:
        self._owners[trace_id] = TraceOwner(key_id, deployment)
        if len(self._owners) > self.size:
            self._owners.popitem(last=False)

    def get(self, trace_id: str) -> TraceOwner | None:
        return self._owners.get(trace_id)


def _stored_owner(store: Store, trace_id: str) -> TraceOwner | None:
    with store.session() as session:
        row = session.execute(
            select(TraceRow.key_id, TraceRow.deployment).where(TraceRow.id == trace_id)
        ).first()
    return TraceOwner(row.key_id, row.deployment) if row else None


async def check_owner(key: ApiKey, trace_id: str, recent: RecentTraces | None, store: Store) -> None:
    """Raise NotFoundError unless the trace exists (stored, or made here and still on its way) and this key
    made it or is an admin. Someone else's trace reads as missing, so trace ids cannot be probed."""
    owner = recent.get(trace_id) if recent is not None else None
    if owner is None:
        owner = await asyncio.to_thread(_stored_owner, store, trace_id)
    if owner is not None and (key.is_admin or (owner.key_id == key.id and key.reaches(owner.deployment))):
        return
    raise NotFoundError(
        f"no trace '{trace_id}' made with this key", hint="use the x-corral-trace-id of your answer"
    )
