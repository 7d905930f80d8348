"""The dashboard's pages as plain functions: store reads in, template context out (run in worker threads)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import select

from corral.config import MonitorSettings
from corral.errors import InvalidInputError, NotFoundError
from corral.gateway.costs import answer_text
from corral.monitor.alerts import history
from corral.monitor.report import parse_time, report, requests_per_bucket, series_and_total, today
from corral.monitor.search import SearchIndex, TraceFilter, search
from corral.monitor.windows import latest_reports
from corral.pipeline.canary_arms import latest_decisions
from corral.store import Store
from corral.store.models import (
    AliasEventRow,
    AliasRow,
    DatasetRow,
    DatasetVersionRow,
    DriftReportRow,
    FeedbackRow,
    ModelRow,
    ModelVersionRow,
    PromptRow,
    PromptVersionRow,
    TraceRow,
)  # fmt: skip


def chart(traces: list[dict[str, Any]], y_title: str = "", kind: str = "scatter") -> str:
    """A Plotly figure as the JSON the page's script draws."""
    data = [
        {"type": kind, "mode": "lines+markers", **t} if kind == "scatter" else {"type": kind, **t}
        for t in traces
    ]
    figure = {"data": data, "layout": {"yaxis": {"title": {"text": y_title}}, "showlegend": True}}
    return orjson.dumps(figure).decode()  # (several times json.dumps' speed; NaN, if any, becomes null)


def overview(store: Store, now: datetime) -> dict[str, Any]:
    start, end = today(now)
    with store.reading() as session:  # three reads, one transaction
        rows = report(store, start, end, session=session)
        events = history(store, firing_only=True, limit=1000, session=session)
        hourly = requests_per_bucket(store, start, end, grain="h", by=("deployment",), session=session)
    firing: dict[str, int] = {}
    for event in events:
        firing[event["deployment"]] = firing.get(event["deployment"], 0) + 1
    traces = [
        {"name": r["deployment"], "x": [p["bucket"] for p in hourly if p["deployment"] == r["deployment"]],
         "y": [p["requests"] for p in hourly if p["deployment"] == r["deployment"]]}
        for r in rows
    ]  # fmt: skip
    return {"title": "Overview", "rows": rows, "firing": firing, "day": start.date().isoformat(),
            "volume": chart(traces, "requests", "bar"), "charts": True}  # fmt: skip


def deployment(store: Store, name: str, now: datetime, hours: float, grain: str) -> dict[str, Any]:
    if not 0 < hours <= 24 * 400:
        raise InvalidInputError("hours must be between 0 and 9600")
    since, until = now - timedelta(hours=hours), now + timedelta(minutes=1)
    # one read of the charted buckets: the lines, the totals, and the versions' table beside them
    with store.reading() as session:  # the charted buckets and the canary's decisions, one transaction
        per_version, total, arms = series_and_total(store, name, since, until, grain=grain, session=session)
        canary = latest_decisions(store, name, limit=10, session=session)
    x = [p["bucket"] for p in total]
    versions = sorted({p["model_version"] for p in per_version})

    def by_version(field: str) -> list[dict[str, Any]]:
        return [
            {"name": v or "–", "x": [p["bucket"] for p in per_version if p["model_version"] == v],
             "y": [p[field] for p in per_version if p["model_version"] == v]}
            for v in versions
        ]  # fmt: skip

    charts = [
        ("volume", "Requests per version", chart(by_version("requests"), "requests")),
        ("latency", "Latency percentiles (ms)",
         chart([{"name": q, "x": x, "y": [p["latency_ms"][q] for p in total]} for q in ("p50", "p95", "p99")], "ms")),
        ("errors", "Errors per version", chart(by_version("errors"), "errors")),
        ("tokens", "Tokens", chart([{"name": "prompt", "x": x, "y": [p["prompt_tokens"] for p in total]},
                                    {"name": "completion", "x": x, "y": [p["completion_tokens"] for p in total]}])),
        ("cost", "Cost per version (USD)", chart(by_version("cost_usd"), "USD")),
        ("feedback", "Feedback mean per version", chart(by_version("feedback_mean"), "score")),
    ]  # fmt: skip
    return {
        "title": f"Deployment {name}",
        "name": name,
        "arms": arms,
        "canary": canary,
        "charts": charts,
        "hours": hours,
        "grain": grain,
    }


def traces(index: SearchIndex, query: dict[str, str]) -> dict[str, Any]:
    names = ("q", "deployment", "version", "status", "user", "session", "feedback", "after")
    f = TraceFilter(since=parse_time(query.get("since")), until=parse_time(query.get("until")))
    for name in names:
        setattr(f, name, query.get(name) or None)
    rows, cursor = search(index, f)
    next_query = urlencode({**{k: v for k, v in query.items() if v and k != "after"}, "after": cursor or ""})
    return {"title": "Traces", "rows": rows, "cursor": cursor, "next_query": next_query, "f": f,
            "since": query.get("since", ""), "until": query.get("until", "")}  # fmt: skip


def trace(store: Store, trace_id: str) -> dict[str, Any]:
    with store.reading() as session:
        row = session.get(TraceRow, trace_id)
        if row is None:
            raise NotFoundError(f"no trace {trace_id}")
        feedback = session.scalars(select(FeedbackRow).where(FeedbackRow.trace_id == trace_id)).all()
        shadows = session.scalars(select(TraceRow).where(TraceRow.shadow_of == trace_id)).all()
    fields = [
        ("id", row.id), ("at", row.at), ("deployment", row.deployment), ("endpoint", row.endpoint),
        ("route", row.route), ("model version", row.model_version), ("status", row.status),
        ("error", row.error or ""), ("latency ms", f"{row.latency_ms:.1f}"),
        ("ttft ms", "" if row.ttft_ms is None else f"{row.ttft_ms:.1f}"), ("prompt tokens", row.prompt_tokens),
        ("completion tokens", row.completion_tokens), ("cost usd", f"{row.cost_usd:.6f}"),
        ("key", row.key_name or ""), ("user", row.user or ""), ("session", row.session or ""),
        ("shadow of", row.shadow_of or ""),
    ]  # fmt: skip
    return {"title": f"Trace {trace_id}", "fields": fields, "request": json.dumps(row.request, indent=2),
            "answer": answer_text(row.response), "feedback": feedback, "shadows": shadows}  # fmt: skip


def drift(store: Store, report_id: int | None, deployment: str | None) -> dict[str, Any]:
    if report_id is None:
        return {"title": "Drift reports", "reports": latest_reports(store, deployment, 100), "report": None}
    with store.reading() as session:
        row = session.get(DriftReportRow, report_id)
        if row is None:
            raise NotFoundError(f"no drift report {report_id}")
        return {"title": f"Drift report {report_id}", "report": row.report}


def alerts(store: Store, settings: MonitorSettings) -> dict[str, Any]:
    return {"title": "Alerts", "rules": settings.alerts, "events": history(store, limit=500)}


def registry(store: Store) -> dict[str, Any]:
    with store.reading() as session:
        models = {m.id: m.name for m in session.scalars(select(ModelRow)).all()}
        aliases: dict[tuple[int, int], list[str]] = {}
        for a in session.scalars(select(AliasRow).where(AliasRow.kind == "model")).all():
            aliases.setdefault((a.owner_id, a.version), []).append(a.name)
        versions = [
            {"model": models.get(v.model_id, "?"), "version": v.version, "kind": v.kind, "lifecycle": v.lifecycle,
             "aliases": sorted(aliases.get((v.model_id, v.version), [])), "created_at": v.created_at}
            for v in session.scalars(select(ModelVersionRow).order_by(ModelVersionRow.model_id, ModelVersionRow.version))
        ]  # fmt: skip
        prompt_names = {p.id: p.name for p in session.scalars(select(PromptRow)).all()}
        events = [
            {**{c: getattr(e, c) for c in ("at", "kind", "alias", "from_version", "to_version", "actor", "reason",
                                           "is_rollback")},
             "owner": (models if e.kind == "model" else prompt_names).get(e.owner_id, e.owner_id)}
            for e in session.scalars(select(AliasEventRow).order_by(AliasEventRow.id.desc()).limit(200))
        ]  # fmt: skip
        dataset_names = {d.id: d.name for d in session.scalars(select(DatasetRow)).all()}
        datasets = [
            {"name": dataset_names.get(d.dataset_id), "version": d.version, "row_count": d.row_count,
             "schema_kind": d.schema_kind, "created_at": d.created_at}
            for d in session.scalars(select(DatasetVersionRow).order_by(DatasetVersionRow.id.desc()).limit(200))
        ]  # fmt: skip
        prompts = [
            {"name": prompt_names.get(p.prompt_id), "version": p.version, "variables": p.variables or [],
             "created_at": p.created_at}
            for p in session.scalars(select(PromptVersionRow).order_by(PromptVersionRow.id.desc()).limit(200))
        ]  # fmt: skip
    return {
        "title": "Registry",
        "versions": versions,
        "alias_events": events,
        "datasets": datasets,
        "prompts": prompts,
    }
