"""`corral monitor` (report, drift) and `corral alerts` (list, check): monitoring from the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from corral.cli import common
from corral.errors import InvalidInputError

monitor_app = typer.Typer(help="Aggregates and drift reports over the traces.", no_args_is_help=True)
alerts_app = typer.Typer(help="Alert rules (monitor.alerts in corral.yaml): history and a one-off check.",
                         no_args_is_help=True)  # fmt: skip


def _store():  # type: ignore[no-untyped-def]
    from corral.store import Store

    return Store.from_settings(common.settings())


def _when(value: str | None, default: datetime) -> datetime:
    from corral.monitor.report import parse_time

    return parse_time(value) or default


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.1f}"


@monitor_app.command("report")
def report_cmd(
    deployment: Annotated[str | None, typer.Option("--deployment", "-d", help="one deployment")] = None,
    hours: Annotated[float, typer.Option("--hours", help="the last N hours (unless --since)")] = 24.0,
    since: Annotated[str | None, typer.Option("--since", help="start, YYYY-MM-DD[THH:MM] (UTC)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="end (default: now)")] = None,
    by: Annotated[
        str, typer.Option("--by", help="deployment, route, model_version (comma-separated)")
    ] = "deployment",
    refresh: Annotated[bool, typer.Option(help="bring the rollups up to date first")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Requests, errors, latency and TTFT percentiles, tokens, cost, feedback and engagement."""
    from corral.monitor import RollupJob, report

    store = _store()
    now = datetime.now(UTC)
    end = _when(until, now)
    start = _when(since, end - timedelta(hours=hours))
    if refresh:
        RollupJob(store).run_once(now)
    groups = [g.strip() for g in by.split(",") if g.strip()]
    rows = report(store, start, end, deployment=deployment, by=groups)
    if as_json:
        common.print_json(rows)
        return
    columns = [*groups, "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "ttft p95", "tokens", "cost $",
               "feedback", "users", "regen"]  # fmt: skip
    table = [
        [*(r[g] for g in groups), r["requests"], r["errors"], _ms(r["latency_ms"]["p50"]), _ms(r["latency_ms"]["p95"]),
         _ms(r["latency_ms"]["p99"]), _ms(r["ttft_ms"]["p95"]), r["prompt_tokens"] + r["completion_tokens"],
         f"{r['cost_usd']:.4f}", "" if r["feedback_mean"] is None else f"{r['feedback_mean']:.2f} ({r['feedback_count']})",
         r["users"], r["regenerations"]]
        for r in rows
    ]  # fmt: skip
    common.print_table(f"monitor report {start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC", columns, table)


@monitor_app.command("drift")
def drift_cmd(
    deployment: Annotated[str, typer.Argument(help="the deployment")],
    hours: Annotated[float, typer.Option("--hours", help="the current window: the last N hours")] = 24.0,
    reference_hours: Annotated[float | None, typer.Option(
        "--reference-hours", help="the window before it (default 168; given, it wins over a configured dataset)")] = None,
    reference_dataset: Annotated[str | None, typer.Option(
        "--reference-dataset", help="compare with a dataset version instead: faq@2, or trained-on:MODEL@REF "
        "(default: monitor.drift_reference_datasets, else the window before)")] = None,
    split: Annotated[str | None, typer.Option("--split", help="the dataset's split (default: train if any)")] = None,
    text: Annotated[bool, typer.Option(help="test prompts and outputs with sentence embeddings")] = True,
    alpha: Annotated[float, typer.Option("--alpha", help="family-wise significance level")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Compare the current window of a deployment's traces with a reference; the report is stored."""
    from corral.monitor import DriftPolicy, drift
    from corral.registry import open_registry

    if not 0 < alpha < 1:
        raise InvalidInputError("--alpha must be between 0 and 1")
    settings = common.settings()
    now = datetime.now(UTC)
    current = (now - timedelta(hours=hours), now)
    if reference_dataset and reference_hours is not None:
        raise InvalidInputError("give --reference-dataset or --reference-hours, not both")
    configured = settings.monitor.drift_reference_datasets.get(deployment) if reference_hours is None else None
    dataset = reference_dataset or configured
    if split is not None and dataset is None:
        raise InvalidInputError("--split needs a dataset reference", hint="add --reference-dataset NAME@N")
    reference = dataset or (current[0] - timedelta(hours=reference_hours or 168.0), current[0])
    registry = open_registry(settings, actor="monitor") if dataset else None
    data = drift(_store(), deployment, reference, current, policy=DriftPolicy(alpha=alpha), use_text=text,
                 registry=registry, split=split)  # fmt: skip
    if as_json:
        common.print_json(data)
        return
    verdict = (
        "DRIFT: " + ", ".join(data["drifted_features"] or ["new topics"]) if data["drifted"] else "no drift"
    )
    rows = [[f["feature"], f["test"], f"{f['statistic']:.4f}", f"{f['p_value']:.4g}", f"{f['effect']:.4f}",
             f"{f['n_reference']}/{f['n_current']}", "yes" if f["drifted"] else ""] for f in data["features"]]  # fmt: skip
    common.console.print(f"reference: {' → '.join(data['reference'])}")
    common.print_table(f"drift of {deployment}: {verdict}", ["feature", "test", "statistic", "p", "effect (PSI/MMD²)",
                       "n ref/cur", "drifted"], rows)  # fmt: skip
    topics = data.get("new_topics")
    if topics:
        common.console.print(f"new topics: {topics['share']:.1%} of current prompts")
        for example in topics["examples"]:
            common.console.print(f"  • {example[:120]}")
    for note in data["notes"]:
        common.console.print(f"note: {note}")


@alerts_app.command("list")
def alerts_list(
    firing: Annotated[bool, typer.Option("--firing", help="only alerts firing now")] = False,
    limit: Annotated[int, typer.Option("--limit", help="newest N events")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Alert events, newest first: when each fired and resolved, with its values."""
    from corral.monitor.alerts import history

    rows = history(_store(), firing_only=firing, limit=limit)
    if as_json:
        common.print_json(rows)
        return
    common.print_table("alerts", ["id", "rule", "deployment", "state", "value", "threshold", "fired", "resolved"],
                       [[r["id"], r["rule"], r["deployment"], r["state"], r["value"], r["threshold"], r["fired_at"],
                         r["resolved_at"]] for r in rows])  # fmt: skip


@alerts_app.command("check")
def alerts_check(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Bring the rollups up to date and evaluate every rule once (for cron setups without `corral serve`)."""
    from corral.monitor.alerts import AlertEngine
    from corral.monitor.rollup import RollupJob
    from corral.monitor.service import known_deployments

    settings = common.settings()
    store = _store()
    RollupJob(store, lookback_s=settings.monitor.lookback_s).run_once()
    events = AlertEngine(store, settings.monitor, lambda: known_deployments(store)).check()
    if as_json:
        common.print_json(events)
    else:
        for e in events:
            common.console.print(
                f"{e['state']}: {e['rule']} on {e['deployment']} = {e['value']} (threshold {e['threshold']})"
            )
        common.console.print(f"{len(settings.monitor.alerts)} rule(s) checked, {len(events)} change(s)")


def register(root: typer.Typer) -> None:
    root.add_typer(monitor_app, name="monitor")
    root.add_typer(alerts_app, name="alerts")
