"""Reports read from the rollups: totals, percentiles and engagement per deployment, route or version."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select

from corral.errors import InvalidInputError
from corral.monitor.rollup import DAY, GRAIN_SIZE, MINUTE, Aggregate, floor, utc
from corral.store import Store
from corral.store.models import RollupRow

GROUPS = ("deployment", "route", "model_version")
QUANTILES = (0.5, 0.95, 0.99)


def _ceil(when: datetime, grain: str) -> datetime:
    down = floor(when, grain)
    return down if down == when else down + GRAIN_SIZE[grain]


def cover(since: datetime, until: datetime) -> list[tuple[str, datetime, datetime]]:
    """The fewest rollup buckets that tile [since, until), minutes at the edges, days in the middle.

    `since` is floored and `until` ceiled to whole minutes: rollups are no finer than that.
    """
    start, end = floor(since, "m"), _ceil(utc(until), "m")
    if start >= end:
        return []
    for grain in ("d", "h"):
        lo, hi = _ceil(start, grain), floor(end, grain)
        if lo < hi:
            return [*cover(start, lo), (grain, lo, hi), *cover(hi, end)]
    return [("m", start, end)]


def summarize(agg: Aggregate, percentiles: bool = True) -> dict[str, Any]:
    """Plain numbers for one group: what the CLI prints, the dashboard charts and alerts compare."""
    n = agg.requests
    none: list[float | None] = [None] * len(QUANTILES)
    latency = agg.latency.quantiles(QUANTILES) if percentiles else none
    ttft = agg.ttft.quantiles(QUANTILES) if percentiles else none
    return {
        "requests": n,
        "errors": agg.errors,
        "error_rate": agg.errors / n if n else 0.0,
        "statuses": dict(sorted(agg.statuses.items())),
        "latency_ms": dict(zip(("p50", "p95", "p99"), latency, strict=True)),
        "latency_ms_mean": agg.latency_ms_sum / n if n else None,
        "ttft_ms": dict(zip(("p50", "p95", "p99"), ttft, strict=True)),
        "prompt_tokens": agg.prompt_tokens,
        "completion_tokens": agg.completion_tokens,
        "cost_usd": round(agg.cost_usd, 6),
        "feedback_count": agg.feedback_count,
        "feedback_mean": agg.feedback_sum / agg.feedback_count if agg.feedback_count else None,
        "users": agg.users,
        "sessions": agg.sessions,
        "turns_per_session": agg.turns / agg.sessions if agg.sessions else None,
        "regenerations": agg.regenerations,
    }


HISTOGRAMS = ("latency_hist", "ttft_hist")


def _rows(
    store: Store, pieces: list[tuple[str, datetime, datetime]], deployment: str | None, histograms: bool = True
) -> list[Any]:
    """Rollup rows of these buckets; without `histograms` their JSON is neither read nor parsed."""
    if not pieces:
        return []
    where = or_(
        *(and_(RollupRow.grain == g, RollupRow.bucket >= s, RollupRow.bucket < e) for g, s, e in pieces)
    )
    columns = [c for c in RollupRow.__table__.columns if histograms or c.name not in HISTOGRAMS]
    query = select(*columns).where(where)
    if deployment is not None:
        query = query.where(RollupRow.deployment == deployment)
    with store.session() as session:
        return list(session.execute(query).all())


def _check_groups(by: Sequence[str]) -> None:
    unknown = [b for b in by if b not in GROUPS]
    if unknown:
        raise InvalidInputError(f"cannot group by {', '.join(unknown)}", hint=f"use {', '.join(GROUPS)}")


def report(
    store: Store,
    since: datetime,
    until: datetime,
    *,
    deployment: str | None = None,
    by: Sequence[str] = ("deployment",),
) -> list[dict[str, Any]]:
    """One summary per group over [since, until). Users and sessions are distinct per bucket, summed."""
    _check_groups(by)
    if until <= since:
        raise InvalidInputError("the report's end must come after its start")
    groups: dict[tuple[str, ...], Aggregate] = defaultdict(Aggregate)
    for row in _rows(store, cover(since, until), deployment):
        agg = groups[tuple(getattr(row, b) for b in by)]
        agg.add_row(row)
        agg.users += row.users
        agg.sessions += row.sessions
    return [{**dict(zip(by, key, strict=True)), **summarize(agg)} for key, agg in sorted(groups.items())]


def series(
    store: Store,
    deployment: str | None,
    since: datetime,
    until: datetime,
    *,
    grain: str = "h",
    by: Sequence[str] = ("model_version",),
    percentiles: bool = True,
) -> list[dict[str, Any]]:
    """Points over time at one grain, one line per group (e.g. per version, for canary arms side by side).

    `deployment` None reads every deployment (group by it to tell them apart); `percentiles` False
    leaves the latency and TTFT quantiles out (None) and the histograms unread: most of the work.
    """
    groups, _ = _series_groups(store, deployment, since, until, grain, by, percentiles, totals=False)
    return _points(groups, by, percentiles)


def series_and_total(
    store: Store, deployment: str, since: datetime, until: datetime, *, grain: str = "h",
    by: Sequence[str] = ("model_version",),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """From one read: `series` per group without percentiles, the total per bucket with them, and
    each group's summary over all the buckets (with percentiles), as `report` gives it over the
    charted span (from the first bucket's start)."""
    overall: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    groups, totals = _series_groups(store, deployment, since, until, grain, by, False, totals=True, overall=overall)
    summaries = [{**dict(zip(by, key, strict=True)), **summarize(agg)} for key, agg in sorted(overall.items())]
    return _points(groups, by, percentiles=False), _points(totals, (), percentiles=True), summaries


def _series_groups(
    store: Store, deployment: str | None, since: datetime, until: datetime, grain: str, by: Sequence[str],
    percentiles: bool, *, totals: bool, overall: dict[tuple[Any, ...], Aggregate] | None = None,
) -> tuple[dict[tuple[Any, ...], Aggregate], dict[tuple[Any, ...], Aggregate]]:  # fmt: skip
    """Aggregates per (bucket, *group), with histograms when `percentiles`; and per bucket (with
    histograms) when `totals`; `overall`, when given, gets each group over every bucket (with them)."""
    _check_groups(by)
    if grain not in GRAIN_SIZE:
        raise InvalidInputError(f"unknown grain '{grain}'", hint="use m, h or d")
    start, end = floor(since, grain), until
    groups: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    total: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    for row in _rows(store, [(grain, start, end)], deployment, histograms=percentiles or totals):
        bucket = utc(row.bucket)
        key = tuple(getattr(row, b) for b in by)
        for agg, histograms in ((groups[(bucket, *key)], percentiles),
                                *(((total[(bucket,)], True),) if totals else ()),
                                *(((overall[key], True),) if overall is not None else ())):  # fmt: skip
            agg.add_row(row, histograms=histograms)
            agg.users += row.users
            agg.sessions += row.sessions
    return groups, total


def _points(
    groups: dict[tuple[Any, ...], Aggregate], by: Sequence[str], percentiles: bool
) -> list[dict[str, Any]]:
    return [
        {"bucket": key[0].isoformat(), **dict(zip(by, key[1:], strict=True)), **summarize(agg, percentiles)}
        for key, agg in sorted(groups.items())
    ]


def parse_time(value: str | None) -> datetime | None:
    """A date or time from a user (YYYY-MM-DD[THH:MM], UTC unless it says otherwise); None for empty."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(
            f"'{value}' is not a date or time", hint="use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def today(now: datetime) -> tuple[datetime, datetime]:
    start = floor(now, "d")
    return start, start + DAY


def last(now: datetime, minutes: float) -> tuple[datetime, datetime]:
    end = floor(now, "m") + MINUTE
    return end - timedelta(minutes=minutes), end
