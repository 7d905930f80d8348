"""Reports read from the rollups: totals, percentiles and engagement per deployment, route or version."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import orjson
from sqlalchemy import Text, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from corral.errors import InvalidInputError
from corral.monitor.rollup import DAY, GRAIN_SIZE, MINUTE, ROLLUP, Aggregate, floor, utc
from corral.monitor.sketch import Sketches
from corral.store import Store

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


def summarize(
    agg: Aggregate, percentiles: bool = True, *, latency: list[float | None] | None = None,
    ttft: list[float | None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Plain numbers for one group: what the CLI prints, the dashboard charts and alerts compare.

    `latency` and `ttft`, when given, are the group's QUANTILES computed elsewhere (`Sketches`)."""
    n = agg.requests
    none: list[float | None] = [None] * len(QUANTILES)
    if latency is None:
        latency = agg.latency.quantiles(QUANTILES) if percentiles else none
    if ttft is None:
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
_JSON = ("statuses", *HISTOGRAMS)
_SKIPPED = ("id", "grain")  # what no report reads


def loads(text: str | bytes) -> Any:
    """JSON from the store: orjson (3-4x faster on the sketches), the standard parser for what it refuses
    (NaN, integers past 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _columns(histograms: bool) -> list[Any]:
    names = [
        c.name for c in ROLLUP.columns if c.name not in _SKIPPED and (histograms or c.name not in HISTOGRAMS)
    ]
    return [cast(ROLLUP.c[n], Text).label(n) if n in _JSON else ROLLUP.c[n] for n in names]


_COLUMNS = {h: _columns(h) for h in (True, False)}  # built once: a statement's construction is Python work


def _rows(
    store: Store,
    pieces: list[tuple[str, datetime, datetime]],
    deployment: str | None,
    histograms: bool = True,
    parse_histograms: bool = True,
    session: Session | None = None,
) -> list[Any]:
    """Rollup rows of these buckets; without `histograms` their JSON is neither read nor parsed, without
    `parse_histograms` it is left as text (for `Sketches`).

    The JSON columns are read as text and parsed here (orjson), not by the driver or SQLAlchemy's
    standard-library parser: the sketches are most of a page's bytes.
    """
    if not pieces:
        return []
    c = ROLLUP.c  # Core columns, not the ORM's: the statement then skips the ORM's execution path
    where = or_(*(and_(c.grain == g, c.bucket >= s, c.bucket < e) for g, s, e in pieces))
    columns = _COLUMNS[histograms]
    query = select(*columns).where(where)
    if deployment is not None:
        query = query.where(c.deployment == deployment)
    parsed = [c.name for c in columns if c.name in _JSON and (parse_histograms or c.name not in HISTOGRAMS)]
    with store.reading(session) as s:
        rows = s.connection().execute(query).all()
    out = []
    for row in rows:
        values = row._asdict()
        for name in parsed:
            text = values[name]
            values[name] = loads(text) if text is not None else {}
        out.append(SimpleNamespace(**values))
    return out


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
    session: Session | None = None,
) -> list[dict[str, Any]]:
    """One summary per group over [since, until). Users and sessions are distinct per bucket, summed."""
    _check_groups(by)
    if until <= since:
        raise InvalidInputError("the report's end must come after its start")
    groups: dict[tuple[str, ...], Aggregate] = defaultdict(Aggregate)
    rows = _rows(store, cover(since, until), deployment, parse_histograms=False, session=session)
    of = [tuple(getattr(row, b) for b in by) for row in rows]
    for row, key in zip(rows, of, strict=True):
        agg = groups[key]
        agg.add_row(row, histograms=False)
        agg.users += row.users
        agg.sessions += row.sessions
    keys = sorted(groups)
    index = {k: i for i, k in enumerate(keys)}
    where = [index[k] for k in of]
    latency = Sketches([r.latency_hist for r in rows]).quantiles(where, len(keys), QUANTILES)
    ttft = Sketches([r.ttft_hist for r in rows]).quantiles(where, len(keys), QUANTILES)
    return [
        {**dict(zip(by, key, strict=True)), **summarize(groups[key], latency=lq, ttft=tq)}
        for key, lq, tq in zip(keys, latency, ttft, strict=True)
    ]


def requests_per_bucket(
    store: Store, since: datetime, until: datetime, *, grain: str = "h", by: Sequence[str] = ("deployment",),
    session: Session | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Requests per bucket and group, summed by the store (the overview's volume chart): no other column
    is read, nothing is summarized in Python."""
    _check_groups(by)
    if grain not in GRAIN_SIZE:
        raise InvalidInputError(f"unknown grain '{grain}'", hint="use m, h or d")
    groups = [ROLLUP.c[b] for b in by]
    query = (
        select(ROLLUP.c.bucket, *groups, func.sum(ROLLUP.c.requests))
        .where(ROLLUP.c.grain == grain, ROLLUP.c.bucket >= floor(since, grain), ROLLUP.c.bucket < until)
        .group_by(ROLLUP.c.bucket, *groups)
        .order_by(ROLLUP.c.bucket, *groups)
    )
    with store.reading(session) as s:
        rows = s.execute(query).all()
    return [
        {"bucket": utc(bucket).isoformat(), **dict(zip(by, keys, strict=True)), "requests": int(n)}
        for bucket, *keys, n in rows
    ]


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
    points, _, _ = _series(store, deployment, since, until, grain, by, percentiles, totals=False)
    return points


def series_and_total(
    store: Store, deployment: str, since: datetime, until: datetime, *, grain: str = "h",
    by: Sequence[str] = ("model_version",), session: Session | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """From one read: `series` per group without percentiles, the total per bucket with its latency
    percentiles (TTFT's are None: the chart draws latency), and each group's summary over all the
    buckets with percentiles, as `report` gives it over the charted span (from the first bucket's start)."""
    return _series(store, deployment, since, until, grain, by, False, totals=True, session=session)


def _series(
    store: Store, deployment: str | None, since: datetime, until: datetime, grain: str, by: Sequence[str],
    percentiles: bool, *, totals: bool, session: Session | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """Points per (bucket, *group), with percentiles when `percentiles`; with `totals`, also points per
    bucket (latency percentiles) and each group's summary over every bucket (latency and TTFT).

    The sketches are not merged dict by dict: `Sketches` reads the stored JSON of every row at once and
    gives each grouping's quantiles (a 24-hour page has ~50 rows of ~100 buckets, merged three ways)."""
    _check_groups(by)
    if grain not in GRAIN_SIZE:
        raise InvalidInputError(f"unknown grain '{grain}'", hint="use m, h or d")
    start, end = floor(since, grain), until
    rows = _rows(
        store, [(grain, start, end)], deployment, histograms=percentiles or totals, parse_histograms=False,
        session=session,
    )  # fmt: skip
    points: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    per_bucket: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    overall: dict[tuple[Any, ...], Aggregate] = defaultdict(Aggregate)
    slots: list[tuple[Any, ...]] = []  # each row's (bucket, *group)
    for row in rows:
        bucket = utc(row.bucket)
        key = tuple(getattr(row, b) for b in by)
        slots.append((bucket, *key))
        for agg in (points[(bucket, *key)], *((per_bucket[(bucket,)], overall[key]) if totals else ())):
            agg.add_row(row, histograms=False)
            agg.users += row.users
            agg.sessions += row.sessions

    def quantiles(sketches: Sketches | None, of: list[Any], keys: list[Any]) -> list[list[float | None]]:
        if sketches is None:
            return [[None] * len(QUANTILES) for _ in keys]
        index = {k: i for i, k in enumerate(keys)}
        return sketches.quantiles([index[k] for k in of], len(keys), QUANTILES)

    latency = Sketches([r.latency_hist for r in rows]) if percentiles or totals else None
    ttft = Sketches([r.ttft_hist for r in rows]) if percentiles or totals else None
    point_keys = sorted(points)
    lat, tt = (
        (quantiles(latency, slots, point_keys), quantiles(ttft, slots, point_keys))
        if percentiles
        else ([None] * len(point_keys), [None] * len(point_keys))
    )
    out = [
        {"bucket": k[0].isoformat(), **dict(zip(by, k[1:], strict=True)),
         **summarize(points[k], False, latency=lq, ttft=tq)}
        for k, lq, tq in zip(point_keys, lat, tt, strict=True)
    ]  # fmt: skip
    if not totals:
        return out, [], []
    bucket_keys, group_keys = sorted(per_bucket), sorted(overall)
    bucket_lat = quantiles(latency, [s[:1] for s in slots], bucket_keys)
    group_lat = quantiles(latency, [s[1:] for s in slots], group_keys)
    group_ttft = quantiles(ttft, [s[1:] for s in slots], group_keys)
    buckets = [
        {"bucket": k[0].isoformat(), **summarize(per_bucket[k], False, latency=q)}
        for k, q in zip(bucket_keys, bucket_lat, strict=True)
    ]
    groups = [
        {**dict(zip(by, k, strict=True)), **summarize(overall[k], latency=lq, ttft=tq)}
        for k, lq, tq in zip(group_keys, group_lat, group_ttft, strict=True)
    ]
    return out, buckets, groups


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
