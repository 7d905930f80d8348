"""Datasets from production traffic: select traces, turn them into chat rows, redact, register.

The selection (deployment, model version, time window, feedback score) is recorded in the new
version's lineage, so a dataset can always be traced back to the traffic it came from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from corral.data.build import BuildOptions, build_rows
from corral.errors import InvalidInputError, NotFoundError
from corral.registry import DatasetVersion, Registry, parse_ref
from corral.store.models import FeedbackRow, TraceRow
from corral.store.traces import EVAL_SOURCE, TraceRecord

SOURCE_TRACE = "source_trace"  # the key under which a dataset row built from a trace keeps its id
USER_SOURCE = "user"  # feedback.source of people's feedback (a judge's is judge:<rubric>)
SPAN_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def span_ago(text: str, now: datetime) -> datetime | None:
    """`now` minus a span such as 30m, 24h, 7d or 2w; None when `text` is not one."""
    word = text.strip().lower()
    if len(word) > 1 and word[-1] in SPAN_UNITS and word[:-1].isdigit():
        return now - timedelta(**{SPAN_UNITS[word[-1]]: int(word[:-1])})
    return None
LOW_SCORE = 0.5  # a trace whose mean user score is below this was answered badly


@dataclass(frozen=True)
class TraceQuery:
    """Which traces become rows. Score bounds keep only traces with feedback (their mean score)."""

    deployment: str | None = None
    model: str | None = None  # NAME@N, NAME@alias (the version it points at now) or NAME (any version)
    since: datetime | None = None
    until: datetime | None = None
    min_score: float | None = None
    max_score: float | None = None
    limit: int | None = None
    # The latest user correction replaces the model's answer; a low-rated trace without one is skipped
    # (training on it would teach the bad answer).
    use_corrections: bool = False

    def check(self) -> None:
        for label, score in (("min_score", self.min_score), ("max_score", self.max_score)):
            if score is not None and not 0 <= score <= 1:
                raise InvalidInputError(f"{label} {score} must be in [0, 1] (feedback scores are)")
        if self.min_score is not None and self.max_score is not None and self.min_score > self.max_score:
            raise InvalidInputError(f"min_score {self.min_score} is above max_score {self.max_score}")
        if self.since and self.until and _utc(self.since) >= _utc(self.until):
            raise InvalidInputError(f"--since {self.since} is not before --until {self.until}")
        if self.limit is not None and self.limit < 1:
            raise InvalidInputError(f"limit must be at least 1, not {self.limit}")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("since", "until"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


@dataclass
class TraceRows:
    rows: list[dict[str, Any]]
    trace_ids: list[str]
    scores: list[float | None] = field(default_factory=list)  # each row's mean user score, if rated
    corrected: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _utc(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    """A message's tool calls as training rows keep them (id, type, function name and arguments)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return None
        arguments = function.get("arguments")
        out.append(
            {
                "id": call.get("id"),
                "type": call.get("type") or "function",
                "function": {
                    "name": function["name"],
                    "arguments": arguments if isinstance(arguments, str) else "{}",
                },
            }
        )
    return out


def _answer(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first choice as an assistant message: its text, or its tool calls (content then "")."""
    choices = (response or {}).get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return None
    first = choices[0]
    message = first.get("message")
    text = message.get("content") if isinstance(message, dict) else first.get("text")
    calls = _tool_calls(message) if isinstance(message, dict) else None
    if calls:
        return {"role": "assistant", "content": text if isinstance(text, str) else "", "tool_calls": calls}
    if isinstance(text, str) and text.strip():
        return {"role": "assistant", "content": text}
    return None


def _history(messages: Any) -> list[dict[str, Any]] | None:
    """Request messages as row messages: plain text, assistant tool calls, tool results; None if not."""
    if not isinstance(messages, list):
        return None
    out: list[dict[str, Any]] = []
    for m in messages:
        if not isinstance(m, dict):
            return None
        role, content, calls = str(m.get("role")), m.get("content"), _tool_calls(m)
        if role == "assistant" and calls:
            out.append(
                {"role": role, "content": content if isinstance(content, str) else "", "tool_calls": calls}
            )
        elif isinstance(content, str):
            row: dict[str, Any] = {"role": role, "content": content}
            if role == "tool" and isinstance(m.get("tool_call_id"), str):
                row["tool_call_id"] = m["tool_call_id"]
            out.append(row)
        else:
            return None
    return out


def trace_to_row(
    endpoint: str, request: dict[str, Any] | None, response: dict[str, Any] | None
) -> dict[str, Any] | str:
    """A chat row from one stored exchange (tool calls and the tools offered included), or why not."""
    if request is None or response is None:
        return "bodies not stored"
    answer = _answer(response)
    if answer is None:
        return "no answer text"
    tools = None
    if endpoint == "chat":
        history = _history(request.get("messages"))
        if history is None:
            return "messages are not plain text"
        tools = request.get("tools") if isinstance(request.get("tools"), list) else None
    elif endpoint == "completions" and isinstance(request.get("prompt"), str):
        history = [{"role": "user", "content": request["prompt"]}]
    else:
        return f"{endpoint} request"
    row: dict[str, Any] = {"messages": [*history, answer]}
    if tools:
        row["tools"] = tools
    return row


def select_trace_rows(registry: Registry, query: TraceQuery) -> TraceRows:
    """Successful, non-shadow chat/completion traces matching `query`, newest first, as chat rows."""
    query.check()
    score = func.avg(FeedbackRow.score).label("score")
    # People's feedback only: scores a judge stored (source judge:<rubric>) are not user feedback.
    scores = (
        select(FeedbackRow.trace_id, score)
        .where(FeedbackRow.source == USER_SOURCE)
        .group_by(FeedbackRow.trace_id)
        .subquery()
    )
    stmt = (
        select(TraceRow, scores.c.score)
        .outerjoin(scores, scores.c.trace_id == TraceRow.id)
        .where(TraceRow.status < 400, TraceRow.shadow_of.is_(None), TraceRow.endpoint != "embeddings")
        .order_by(TraceRow.at.desc())
    )
    if query.deployment:
        stmt = stmt.where(TraceRow.deployment == query.deployment)
    if query.model:
        stmt = stmt.where(_answered_by(registry, query.model))
    if query.since:
        stmt = stmt.where(TraceRow.at >= _utc(query.since))
    if query.until:
        stmt = stmt.where(TraceRow.at < _utc(query.until))
    if query.min_score is not None:
        stmt = stmt.where(scores.c.score >= query.min_score)
    if query.max_score is not None:
        stmt = stmt.where(scores.c.score <= query.max_score)
    if query.limit:
        stmt = stmt.limit(query.limit)
    out = TraceRows([], [])
    with registry.store.session() as session:
        found = session.execute(stmt).all()
        corrections = _corrections(session, [t.id for t, _ in found]) if query.use_corrections else {}
        for stored, mean in found:
            record = TraceRecord.from_row(stored)
            if record.meta.get("source") == EVAL_SOURCE:
                out.skipped["evaluation traffic"] += 1
                continue
            row = trace_to_row(record.endpoint, record.request, record.response)
            if isinstance(row, str):
                out.skipped[row] += 1
                continue
            if query.use_corrections:
                if record.id in corrections:
                    row["messages"][-1] = {"role": "assistant", "content": corrections[record.id]}
                    out.corrected += 1
                elif mean is not None and mean < LOW_SCORE:
                    out.skipped["low-rated without a correction"] += 1
                    continue
            out.rows.append(row)
            out.trace_ids.append(record.id)
            out.scores.append(None if mean is None else float(mean))
    return out


def _corrections(session: Any, trace_ids: list[str]) -> dict[str, str]:
    """The latest user correction of each of these traces."""
    found: dict[str, str] = {}
    for start in range(0, len(trace_ids), 500):  # bounded IN lists
        chunk = trace_ids[start : start + 500]
        rows = session.execute(
            select(FeedbackRow.trace_id, FeedbackRow.correction)
            .where(FeedbackRow.trace_id.in_(chunk), FeedbackRow.source == USER_SOURCE)
            .where(FeedbackRow.correction.is_not(None))
            .order_by(FeedbackRow.at)
        ).all()
        found.update({trace: text for trace, text in rows})
    return found


def _answered_by(registry: Registry, ref: str) -> Any:
    """The trace filter for `--model`: NAME@N that version, NAME@alias the version it points at now,
    a bare NAME every version of that model (traffic usually ran on an older one than the latest).

    A model or version the registry does not know is an error, not an empty selection, unless
    traces recorded it (they may come from a store whose registry has since changed).
    """
    name = parse_ref(ref).name
    recorded = (
        TraceRow.model_version.startswith(f"{name}@", autoescape=True)
        if "@" not in ref
        else TraceRow.model_version == ref
    )
    try:
        if "@" in ref:
            return TraceRow.model_version == registry.models.resolve(ref).ref
        registry.models.get(name)
        return recorded
    except NotFoundError:
        with registry.store.session() as session:
            if session.scalar(select(TraceRow.id).where(recorded).limit(1)) is None:
                raise
        return recorded


def dataset_from_traces(
    registry: Registry,
    name: str,
    query: TraceQuery,
    *,
    options: BuildOptions | None = None,
    tags: dict[str, Any] | None = None,
) -> tuple[DatasetVersion, dict[str, Any]]:
    """Register the selected traces (cleaned, PII-redacted, deduplicated, split) as the next version of `name`."""
    selected = select_trace_rows(registry, query)
    if not selected.rows:
        skipped = f"; skipped: {dict(selected.skipped)}" if selected.skipped else ""
        raise InvalidInputError(
            f"no trace matches {_describe(query)}{skipped}",
            hint="widen the query; traces need stored bodies (tracing.store_bodies) to become rows",
        )
    # Each row keeps the id of the trace it came from, so deleting a user can find it again.
    rows = [{**row, SOURCE_TRACE: tid} for row, tid in zip(selected.rows, selected.trace_ids, strict=True)]
    result = build_rows(rows, options or BuildOptions(redact=True), "chat")
    report = {
        "traces": len(selected.rows),
        "corrected": selected.corrected,
        "skipped": dict(selected.skipped),
        **result.report,
    }
    lineage = {
        "source": "traces",
        "query": query.as_dict(),
        "first_trace": selected.trace_ids[-1],
        "last_trace": selected.trace_ids[0],
        "report": report,
    }
    version = registry.datasets.register(name, result.rows, kind="chat", lineage=lineage, tags=tags)
    return version, report


def _describe(query: TraceQuery) -> str:
    given = {k: v for k, v in query.as_dict().items() if v is not None and v is not False}
    return "the query " + ", ".join(f"{k}={v}" for k, v in given.items()) if given else "any query"
