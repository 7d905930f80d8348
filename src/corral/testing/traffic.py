"""Synthetic traces and feedback for monitoring tests, demos and the scale benchmark."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import JSON, insert

from corral.store import Store
from corral.store.models import FeedbackRow, TraceRow

TOPICS = {
    "billing": ["How do I update my billing address?", "Why was I charged twice this month?",
                "Can I get an invoice for my last payment?", "How do I change my credit card?"],
    "shipping": ["Where is my package right now?", "How long does shipping to Canada take?",
                 "Can I change the delivery address of my order?", "My parcel arrived damaged, what now?"],
    "account": ["How do I reset my password?", "Can I change the email on my account?",
                "How do I delete my account for good?", "Why is my account locked?"],
}  # fmt: skip
ANSWERS = ["Sure, here is how you can do that.", "I can help with that request.", "Thanks for asking."]


def trace_row(
    trace_id: str,
    at: datetime,
    deployment: str,
    *,
    prompt: str,
    answer: str = "Sure.",
    version: str = "v1",
    route: str | None = None,
    status: int = 200,
    latency_ms: float = 100.0,
    ttft_ms: float | None = None,
    cost_usd: float = 0.0001,
    user: str | None = None,
    session: str | None = None,
) -> dict[str, Any]:
    """One trace as the gateway stores it (a chat request and its answer)."""
    ok = status < 400
    return {
        "id": trace_id, "at": at, "day": at.strftime("%Y-%m-%d"), "key_id": None, "key_name": None,
        "deployment": deployment, "endpoint": "chat", "route": route or f"{deployment}@{version}",
        "model_version": version, "shadow_of": None, "prompt_ref": None,
        "request": {"model": deployment, "messages": [{"role": "user", "content": prompt}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": answer}}]} if ok else None,
        "prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": max(1, len(answer) // 4) if ok else 0,
        "tokens_estimated": False, "cost_usd": cost_usd if ok else 0.0, "latency_ms": latency_ms,
        "ttft_ms": ttft_ms, "status": status, "error": None if ok else "upstream failed", "stream": ttft_ms is not None,
        "user": user, "session": session, "meta": {},
    }  # fmt: skip


def synthetic_traces(
    n: int,
    start: datetime,
    span: timedelta,
    *,
    deployments: dict[str, list[str]] | None = None,
    seed: int = 0,
    users: int = 200,
) -> Iterator[dict[str, Any]]:
    """`n` traces spread over [start, start + span): several deployments and versions, log-normal latency."""
    rng = random.Random(seed)
    deployments = deployments or {"support": ["v1", "v2"], "search": ["v3"], "summarize": ["v1"]}
    names = sorted(deployments)
    topics = sorted(TOPICS)
    step = span / max(n, 1)
    for i in range(n):
        deployment = names[i % len(names)]
        versions = deployments[deployment]
        version = versions[rng.randrange(len(versions))]
        prompt = rng.choice(TOPICS[topics[rng.randrange(len(topics))]])
        user = f"u{rng.randrange(users)}"
        status = 200 if rng.random() > 0.02 else rng.choice((429, 500, 502))
        latency = rng.lognormvariate(5.0, 0.6)
        yield trace_row(
            f"{seed:08x}{i:024x}", start + step * i, deployment, prompt=f"{prompt} (#{i % 97})",
            answer=rng.choice(ANSWERS) + " " + "detail " * rng.randrange(1, 40), version=version,
            status=status, latency_ms=latency, ttft_ms=latency * rng.uniform(0.1, 0.5) if i % 2 else None,
            cost_usd=rng.uniform(1e-5, 1e-3), user=user, session=f"{user}-s{i // 500}",
        )  # fmt: skip


def insert_traces(store: Store, rows: list[dict[str, Any]]) -> None:
    store.ensure_ready()
    with store.engine.begin() as conn:
        conn.execute(insert(TraceRow), rows)


def insert_feedback(store: Store, rows: list[dict[str, Any]]) -> None:
    """Rows of {id, trace_id, score, at} (label, comment, key_id optional)."""
    store.ensure_ready()
    with store.engine.begin() as conn:
        conn.execute(
            insert(FeedbackRow), [{"label": None, "comment": None, "key_id": None, **r} for r in rows]
        )


def bulk_insert_traces(store: Store, rows: list[dict[str, Any]]) -> None:
    """`insert_traces` for millions of rows: COPY on PostgreSQL, one prepared executemany on SQLite.

    Values go through the columns' own SQLAlchemy conversions, so they are stored exactly as the
    ORM would store them.
    """
    store.ensure_ready()
    table = TraceRow.__table__
    names = [c.name for c in table.columns]
    quoted = ", ".join(f'"{n}"' for n in names)
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if store.dialect == "postgresql":
            json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
            with cursor.copy(f"COPY traces ({quoted}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row([
                        orjson.dumps(row[n]).decode() if n in json_cols and row[n] is not None else row[n]
                        for n in names
                    ])  # fmt: skip
        else:
            dialect = store.engine.dialect
            convert = [(c.name, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in table.columns]
            if not raw.in_transaction:  # type: ignore[attr-defined]  # the store runs SQLite in autocommit mode
                cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(
                f"INSERT INTO traces ({quoted}) VALUES ({', '.join('?' for _ in names)})",
                [tuple(fn(row[n]) if fn else row[n] for n, fn in convert) for row in rows],
            )
        raw.commit()
    finally:
        raw.close()
