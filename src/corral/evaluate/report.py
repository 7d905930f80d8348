"""The HTML report: summary with intervals, a chart per metric, worst items first, and the
quality-against-latency and quality-against-cost scatter across the runs compared. Offline: plotly's
bundled plotly.js is inlined, no CDN."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from corral.evaluate import metrics as m
from corral.evaluate.runs import EvalRun

QUALITY = ("exact_match", "accuracy", "f1_macro", "rougeL", "bleu", "chrf", "json_valid")
WORST_ITEMS = 50


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _label(run: EvalRun) -> str:
    return f"{run.target} ({run.id[:8]})"


def _metric_chart(name: str, results: list[EvalRun]) -> Any:
    import plotly.graph_objects as go

    shown = [r for r in results if _finite(r.summary.get(name, {}).get("value"))]
    values = [r.summary[name]["value"] for r in shown]
    lows = [r.summary[name].get("low") for r in shown]
    highs = [r.summary[name].get("high") for r in shown]
    error = {
        "type": "data",
        "symmetric": False,
        "array": [h - v if _finite(h) else 0 for v, h in zip(values, highs, strict=True)],
        "arrayminus": [v - lo if _finite(lo) else 0 for v, lo in zip(values, lows, strict=True)],
    }
    fig = go.Figure(go.Bar(x=[_label(r) for r in shown], y=values, error_y=error, name=name))
    fig.update_layout(title=f"{name} (95% interval)", height=320, margin={"t": 40, "b": 40})
    return fig


def _scatter(quality: str, axis: str, results: list[EvalRun]) -> Any | None:
    import plotly.graph_objects as go

    shown = [
        r
        for r in results
        if _finite(r.summary.get(quality, {}).get("value")) and _finite(r.summary.get(axis, {}).get("value"))
    ]
    if not shown:
        return None
    fig = go.Figure(
        go.Scatter(
            x=[r.summary[axis]["value"] for r in shown],
            y=[r.summary[quality]["value"] for r in shown],
            text=[_label(r) for r in shown],
            mode="markers+text",
            textposition="top center",
            marker={"size": 12},
        )
    )
    fig.update_layout(title=f"{quality} against {axis}", xaxis_title=axis, yaxis_title=quality, height=360)
    return fig


def _summary_table(results: list[EvalRun]) -> str:
    names = list(dict.fromkeys(n for r in results for n in r.summary))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = []
    for r in results:
        cells = []
        for n in names:
            e = r.summary.get(n)
            if not e or not _finite(e.get("value")):
                cells.append("<td>-</td>")
                continue
            interval = (
                f" [{e['low']:.4g}, {e['high']:.4g}]"
                if _finite(e.get("low")) and _finite(e.get("high"))
                else ""
            )
            cells.append(
                f"<td data-metric='{html.escape(n)}' data-value='{e['value']!r}'>{e['value']:.4g}{interval}</td>"
            )
        rows.append(f"<tr><th>{html.escape(_label(r))}</th>{''.join(cells)}</tr>")
    return f"<table id='summary'><tr><th>run</th>{head}</tr>{''.join(rows)}</table>"


def _item_score(run: EvalRun, outcome: Any) -> float:
    """The first item-level metric's score for ordering; failures first, unscored last."""
    if not outcome.ok:
        return -math.inf
    for name in run.metrics:
        metric = m.METRICS.get(name)
        if metric is not None and metric.per_item and not metric.on_failure:
            value = metric.observe(outcome, run.config)
            if isinstance(value, float):
                return value
    return math.inf


def _items_table(run: EvalRun) -> str:
    worst = sorted(run.outcomes, key=lambda o: _item_score(run, o))[:WORST_ITEMS]
    rows = "".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            o.position,
            html.escape(
                str(o.request.get("prompt") or (o.request.get("messages") or [{}])[-1].get("content", ""))
            ),
            html.escape(o.prediction or ""),
            html.escape(o.reference or ""),
            "" if _item_score(run, o) in (math.inf, -math.inf) else f"{_item_score(run, o):.3g}",
            html.escape(o.error or (f"{o.latency_ms:.0f} ms" if o.latency_ms is not None else "")),
        )
        for o in worst
    )
    return (
        f"<h3>{html.escape(_label(run))}: worst items first</h3><table class='items'>"
        "<tr><th>#</th><th>question</th><th>answer</th><th>reference</th><th>score</th><th>latency / error</th></tr>"
        f"{rows}</table>"
    )


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}"
    ".chart{max-width:900px}"
)


def render(results: list[EvalRun]) -> str:
    """The whole page as a string."""
    from plotly.offline import get_plotlyjs

    charts: list[tuple[str, Any]] = []
    names = list(dict.fromkeys(n for r in results for n in r.summary if not n.startswith("judge_")))
    charts += [(f"chart-{n}", _metric_chart(n, results)) for n in names]
    quality = next((q for q in QUALITY if any(q in r.summary for r in results)), None)
    if quality:
        for axis in ("latency_p95", "cost"):
            fig = _scatter(quality, axis, results)
            if fig is not None:
                charts.append((f"scatter-{axis}", fig))
    divs = "".join(
        f"<div class='chart'>{fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id)}</div>"
        for div_id, fig in charts
    )
    title = "corral evaluation: " + ", ".join(html.escape(_label(r)) for r in results)
    datasets = ", ".join(sorted({f"{r.dataset}:{r.split}" for r in results}))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body><h1>{title}</h1><p>data: {html.escape(datasets)}</p>"
        f"<h2>summary</h2>{_summary_table(results)}<h2>charts</h2>{divs}<h2>items</h2>"
        f"{''.join(_items_table(r) for r in results)}</body></html>"
    )


def write_report(results: list[EvalRun], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results), encoding="utf-8")
    return path
