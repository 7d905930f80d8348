"""`corral eval`: run, list, compare, gate, report, export and import-scores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli import common
from corral.cli.common import console, print_json, print_table
from corral.errors import CorralError, InvalidInputError

app = typer.Typer(
    help="Evaluate versions: metrics with intervals, paired comparisons, gates, reports.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
GATE_FAILED, GATE_ERROR, INTERRUPTED = 1, 7, 130


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _interval(entry: dict[str, Any]) -> str:
    if entry.get("low") is None:
        return ""
    return f"[{_fmt(entry['low'])}, {_fmt(entry['high'])}]"


def print_summary(run: Any) -> None:
    rows = [
        [name, _fmt(e["value"]), _interval(e), e.get("n", ""), e.get("method", "")]
        for name, e in run.summary.items()
    ]
    title = f"run {run.id[:12]}: {run.target} on {run.dataset}:{run.split} ({run.status}, {run.item_count} items, {run.error_count} errors)"
    print_table(title, ["metric", "value", "95% interval", "n", "interval"], rows)


def _options(**given: Any) -> Any:
    from corral.evaluate import RunOptions

    return RunOptions(**{k: v for k, v in given.items() if v is not None})


def _target(
    model: str | None,
    deployment: str | None,
    gateway: str,
    key_env: str | None,
    url: str | None,
    upstream_model: str | None,
    api_key_env: str | None,
) -> Any:
    from corral.evaluate import TargetSpec

    return TargetSpec(
        model=model,
        deployment=deployment,
        gateway=gateway,
        key_env=key_env,
        url=url,
        upstream_model=upstream_model,
        api_key_env=api_key_env,
    )


def _json_file(path: str | None, what: str) -> Any:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"{what} file {path} does not exist")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{what} file {path} is not valid JSON ({exc.msg})") from None


ModelOpt = Annotated[
    str | None, typer.Option("--model", "-m", help="registry version; a worker serves it for the run")
]
DeploymentOpt = Annotated[str | None, typer.Option(help="deployment name, through a running gateway")]
GatewayOpt = Annotated[str, typer.Option(help="gateway base URL for --deployment")]
KeyEnvOpt = Annotated[str | None, typer.Option(help="variable holding the gateway API key")]
UrlOpt = Annotated[str | None, typer.Option(help="any OpenAI-compatible base URL (…/v1)")]
UpstreamOpt = Annotated[str | None, typer.Option(help="model name to send to --url")]
ApiKeyEnvOpt = Annotated[str | None, typer.Option(help="variable holding --url's API key")]


@app.command("run")
def run_cmd(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="dataset version, e.g. support@1")],
    metrics: Annotated[str, typer.Option(help="comma-separated metric names")] = "exact_match",
    split: Annotated[str, typer.Option(help="train, validation, test or all")] = "test",
    model: ModelOpt = None,
    deployment: DeploymentOpt = None,
    gateway: GatewayOpt = "http://127.0.0.1:8000",
    key_env: KeyEnvOpt = None,
    url: UrlOpt = None,
    upstream_model: UpstreamOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: Annotated[int, typer.Option(min=1, help="requests in flight")] = 16,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N items")] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 128,
    json_schema: Annotated[str | None, typer.Option(help="JSON schema file for json_schema")] = None,
    judge_rubric: Annotated[
        str | None, typer.Option(help="prompt template used as the judge's rubric")
    ] = None,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible URL of the judge")] = None,
    judge_model: Annotated[str | None, typer.Option(help="model name the judge URL serves")] = None,
    bias_pairs: Annotated[str | None, typer.Option(help="extra word pairs (CSV a,b) for bias_gap")] = None,
    html: Annotated[str | None, typer.Option(help="also write the HTML report here")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate one target on a dataset split and store the run."""
    from corral.evaluate import run

    judge = None
    if judge_rubric or judge_url:
        from corral.evaluate.judge import JudgeSpec

        judge = JudgeSpec.from_options(common.registry(), judge_rubric, judge_url, judge_model)
    options = _options(
        split=split,
        concurrency=concurrency,
        limit=limit,
        max_tokens=max_tokens,
        json_schema=_json_file(json_schema, "JSON schema"),
        judge=judge,
        bias_pairs=bias_pairs,
        progress=progress and not json_out,
        config_path=common.settings().source,
    )
    target = _target(model, deployment, gateway, key_env, url, upstream_model, api_key_env)
    result = run(target, dataset, metrics, registry=common.registry(), options=options)
    _log_mlflow([result])
    if html:
        from corral.evaluate.report import write_report

        write_report([result], Path(html))
    if json_out:
        print_json(result.brief())
    else:
        print_summary(result)
    if result.status == "interrupted":
        common.err_console.print(f"interrupted: run {result.id} kept its {result.item_count} finished items")
        raise typer.Exit(INTERRUPTED)


def _log_mlflow(results: list[Any]) -> None:
    from corral.evaluate.tracking import log_runs

    log_runs(results, common.settings())


@app.command("list")
def list_cmd(
    target: Annotated[str | None, typer.Option(help="only runs of this target, e.g. starter@1")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Stored runs, newest first."""
    from corral.evaluate.runs import runs_of

    found = runs_of(common.registry().store, target)
    if json_out:
        print_json([r.brief() for r in found])
        return
    print_table(
        "evaluation runs",
        ["id", "target", "dataset", "split", "status", "items", "metrics", "created"],
        [
            [
                r.id[:12],
                r.target,
                r.dataset,
                r.split,
                r.status,
                r.item_count,
                ", ".join(f"{k}={_fmt(v['value'])}" for k, v in r.summary.items()),
                common.fmt_time(r.created_at),
            ]
            for r in found
        ],
    )


def _difference_rows(comparison: Any) -> list[list[Any]]:
    return [
        [
            name,
            _fmt(d.candidate),
            _fmt(d.baseline),
            _fmt(d.diff),
            f"[{_fmt(d.low)}, {_fmt(d.high)}]",
            _fmt(d.p_value),
            d.n,
        ]
        for name, d in comparison.differences.items()
    ]


DIFF_COLUMNS = ["metric", "candidate", "baseline", "difference", "95% interval", "p (permutation)", "pairs"]


@app.command("compare")
def compare_cmd(
    run_a: Annotated[str, typer.Argument(help="candidate run id")],
    run_b: Annotated[str, typer.Argument(help="baseline run id")],
    json_out: JsonOpt = False,
) -> None:
    """Paired differences (A − B) per metric: bootstrap interval and permutation p-value."""
    from corral.evaluate import compare

    comparison = compare(run_a, run_b, registry=common.registry())
    if json_out:
        print_json({name: d.as_dict() for name, d in comparison.differences.items()})
        return
    print_table(
        f"{comparison.candidate.target} − {comparison.baseline.target} on {comparison.candidate.dataset}",
        DIFF_COLUMNS,
        _difference_rows(comparison),
    )


@app.command("gate")
def gate_cmd(
    candidate: Annotated[str, typer.Argument(help="candidate version, e.g. support@3")],
    gate_file: Annotated[str, typer.Argument(help="gate YAML")],
    concurrency: Annotated[int, typer.Option(min=1)] = 16,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate candidate and baseline and apply the rules: exit 0 pass, 1 a rule failed, 2 bad gate file,
    7 (or another code, never 1) when a target is unreachable or anything else went wrong."""
    from corral.evaluate import gate, load_gate

    spec = load_gate(gate_file)  # exit 2 on a bad file, before anything runs
    try:
        outcome = gate(
            candidate,
            spec,
            registry=common.registry(),
            options=_options(
                concurrency=concurrency, progress=not json_out, config_path=common.settings().source
            ),
        )
    except CorralError as exc:
        if exc.exit_code != GATE_FAILED:
            raise
        common.report(exc)
        raise typer.Exit(GATE_ERROR) from None
    _print_verdict(outcome, json_out)
    if not outcome.passed:
        raise typer.Exit(GATE_FAILED)


def _print_verdict(outcome: Any, json_out: bool) -> None:
    results = outcome.verdict.results
    cand = outcome.candidate
    base = outcome.comparison.baseline if outcome.comparison is not None else None
    if json_out:
        rules = [
            {
                "rule": r.rule.text,
                "candidate": r.candidate,
                "baseline": r.baseline,
                "threshold": r.threshold,
                "compared": r.compared,
                "diff_low": r.diff_low,
                "diff_high": r.diff_high,
                "passed": r.passed,
                "reason": r.reason,
            }
            for r in results
        ]
        print_json(
            {
                "passed": outcome.passed,
                "candidate": cand.id,
                "baseline": base.id if base else None,
                "rules": rules,
            }
        )
        return
    against = f" against {base.target}" if base is not None else ""
    print_table(
        f"gate: {cand.target}{against} on {cand.dataset}:{cand.split}",
        ["rule", "candidate", "baseline", "difference 95%", "result", "why"],
        [
            [
                r.rule.text,
                _fmt(r.candidate),
                _fmt(r.baseline),
                "" if r.diff_low is None else f"[{_fmt(r.diff_low)}, {_fmt(r.diff_high)}]",
                "pass" if r.passed else "FAIL",
                r.reason,
            ]
            for r in results
        ],
    )
    if outcome.passed:
        console.print("[green]gate passed[/green]")
    else:
        console.print(f"[red]gate failed[/red]: {'; '.join(r.reason for r in outcome.verdict.failed)}")


@app.command("report")
def report_cmd(
    run_ids: Annotated[list[str], typer.Argument(help="one or more run ids")],
    html: Annotated[str, typer.Option(help="HTML file to write")],
) -> None:
    """A static HTML page: summary with intervals, charts, worst items, accuracy against latency and cost."""
    from corral.evaluate.report import write_report
    from corral.evaluate.runs import load

    store = common.registry().store
    path = write_report([load(store, run_id) for run_id in run_ids], Path(html))
    console.print(f"wrote {path}")


@app.command("export")
def export_cmd(
    run_id: Annotated[str, typer.Argument(help="run id")],
    csv: Annotated[str, typer.Option("--csv", help="CSV file for raters")],
) -> None:
    """Write a run's items for human raters (fill in the `score` column, 0 to 1)."""
    from corral.evaluate.human import export_items
    from corral.evaluate.runs import load

    count = export_items(load(common.registry().store, run_id), Path(csv))
    console.print(f"wrote {count} items to {csv}")


@app.command("import-scores")
def import_scores_cmd(
    run_id: Annotated[str, typer.Argument(help="run id")],
    file: Annotated[str, typer.Argument(help="the raters' CSV (position, score)")],
    name: Annotated[str, typer.Option(help="metric name: stored as human:NAME")] = "rating",
) -> None:
    """Add raters' scores to a run as the metric human:NAME, with the same statistics."""
    from corral.evaluate.human import import_scores

    run = import_scores(common.registry().store, run_id, Path(file), name)
    print_summary(run)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
