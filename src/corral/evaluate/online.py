"""Online evaluation: one `corral serve` replica (elected by a lease row) scores a sample of live
traces in the background, off the request path, and stores the scores as feedback with source
`judge:<rubric>` (or `metric:<name>`), which readers of user feedback leave out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from corral.data.traces import trace_to_row
from corral.errors import ConfigError, CorralError
from corral.evaluate import metrics as m
from corral.evaluate.client import SOURCE_HEADER
from corral.evaluate.judge import JudgeSpec, judge_one
from corral.evaluate.outcome import Outcome
from corral.registry import Registry
from corral.store.lease import Lease
from corral.store.models import FeedbackRow, TraceRow

log = logging.getLogger("corral.evaluate.online")
LEASE = "evaluate.online"
BATCH = 64


def sampled(trace_id: str, rate: float) -> bool:
    """Whether a trace is in the sample: decided by its id's hash, so every replica agrees."""
    bucket = int(hashlib.sha256(trace_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < rate


@dataclass(frozen=True)
class Scorer:
    """One online rule, ready: the feedback source it writes and how it scores an outcome."""

    rule: Any  # config.OnlineEvalRule
    source: str
    judge: JudgeSpec | None = None
    metric: m.Metric | None = None


def scorers(rules: list[Any], registry: Registry) -> list[Scorer]:
    """Check every rule against the registry and the metric list before anything runs."""
    out = []
    for i, rule in enumerate(rules):
        where = f"evaluate.online[{i}]"
        try:
            if rule.metric is not None:
                (metric,) = m.resolve([rule.metric])
                if metric.needs:
                    raise ConfigError(
                        f"{where}.metric: {rule.metric} needs {', '.join(metric.needs)}; live traffic has none"
                    )
                out.append(Scorer(rule, f"metric:{metric.name}", metric=metric))
            else:
                judge = JudgeSpec.from_options(
                    registry, rule.rubric, rule.judge_url, rule.judge_model, rule.judge_key_env
                )
                out.append(Scorer(rule, judge.metric, judge=judge))
        except CorralError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"{where}: {exc}") from None
    return out


def pending(
    registry: Registry, scorer: Scorer, since: datetime, limit: int = BATCH
) -> list[tuple[str, Outcome]]:
    """Sampled, successful, non-evaluation traces of the rule's deployment that this scorer has not scored."""
    scored = select(FeedbackRow.trace_id).where(FeedbackRow.source == scorer.source)
    stmt = (
        select(TraceRow.id, TraceRow.endpoint, TraceRow.request, TraceRow.response, TraceRow.meta)
        .where(
            TraceRow.deployment == scorer.rule.deployment,
            TraceRow.status < 400,
            TraceRow.shadow_of.is_(None),
            TraceRow.at >= since,
            TraceRow.id.not_in(scored),
        )
        .order_by(TraceRow.at)
    )
    out: list[tuple[str, Outcome]] = []
    with registry.store.session() as session:
        for trace_id, endpoint, request, response, meta in session.execute(stmt):
            if (meta or {}).get("source") == "eval" or not sampled(trace_id, scorer.rule.sample_rate):
                continue
            row = trace_to_row(endpoint, request, response)
            if isinstance(row, str):  # no stored bodies, no answer text, ...
                continue
            *asked, answer = row["messages"]
            out.append((trace_id, Outcome(0, {"messages": asked}, None, prediction=answer["content"])))
            if len(out) >= limit:
                break
    return out


async def _judge_all(judge: JudgeSpec, outcomes: list[Outcome]) -> None:
    async with httpx.AsyncClient(
        headers={SOURCE_HEADER: "eval", **judge.endpoint.headers}, timeout=judge.endpoint.timeout_s
    ) as client:
        await asyncio.gather(*(judge_one(client, judge, o) for o in outcomes))


class OnlineEvaluator:
    """Scores new traces every `online_interval_s` while this replica holds the lease."""

    def __init__(self, settings: Any, registry: Registry, holder: str | None = None) -> None:
        self.settings = settings.evaluate
        self.registry = registry
        self.lease = Lease(registry.store, LEASE, ttl_s=self.settings.online_lease_s, holder=holder)
        self.scorers = scorers(self.settings.online, registry)
        self._tried: set[tuple[str, str]] = set()  # (source, trace) that a judge could not score
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self, now: datetime | None = None) -> int:
        """One round: take (or keep) the lease, score what is pending; returns the scores stored."""
        now = now or datetime.now(UTC)
        if not self.scorers or not self.lease.acquire(now):
            return 0
        since = now - timedelta(seconds=self.settings.online_lookback_s)
        stored = 0
        for scorer in self.scorers:
            todo = [
                (t, o)
                for t, o in pending(self.registry, scorer, since)
                if (scorer.source, t) not in self._tried
            ]
            stored += self._score(scorer, todo)
        return stored

    def _score(self, scorer: Scorer, todo: list[tuple[str, Outcome]]) -> int:
        if not todo:
            return 0
        if scorer.judge is not None:
            asyncio.run(_judge_all(scorer.judge, [o for _, o in todo]))
        rows = []
        for trace_id, o in todo:
            value = o.scores.get(scorer.source) if scorer.judge else scorer.metric.observe(o, {})  # type: ignore[union-attr]
            if not isinstance(value, float):
                self._tried.add((scorer.source, trace_id))
                continue
            rows.append(
                FeedbackRow(
                    id=uuid.uuid4().hex,
                    trace_id=trace_id,
                    score=value,
                    source=scorer.source,
                    label=scorer.rule.deployment,
                )
            )
        with self.registry.store.session() as session:
            session.add_all(rows)
        return len(rows)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.online_interval_s):
            try:
                stored = self.tick()
                if stored:
                    log.info("online evaluation stored %d scores", stored)
            except Exception:  # noqa: BLE001 - background job: log and try again next round
                log.exception("online evaluation round failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="corral-online-eval", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        self.lease.release()


@contextmanager
def running(settings: Any, registry: Registry) -> Iterator[OnlineEvaluator | None]:
    """Online evaluation for the block when `evaluate.online` has rules (for `corral serve`)."""
    if not settings.evaluate.online:
        yield None
        return
    evaluator = OnlineEvaluator(settings, registry)
    evaluator.start()
    try:
        yield evaluator
    finally:
        evaluator.stop()
