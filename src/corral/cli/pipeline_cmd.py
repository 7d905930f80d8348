"""`corral pipeline`: run a refresh pipeline file, resume a run, list runs, show one run's stages live."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli.common import (
    STATE,
    console,
    err_console,
    fmt_time,
    print_json,
    print_table,
    registry,
    settings,
)

app = typer.Typer(help="Refresh pipelines: traces → dataset → train → gate → canary → promote → retire.")
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


def _runner(json_out: bool) -> Any:
    """The runner, narrating each stage on stdout (on stderr when stdout is for --json)."""
    from corral.pipeline import PipelineRunner

    config = STATE.config_path or settings().source
    out = err_console if json_out else console
    return PipelineRunner(
        registry(), settings(), config_path=config, say=lambda text: out.print(text, highlight=False)
    )


def _exit_for(run: Any) -> None:
    if run.status == "rejected":
        raise typer.Exit(1)


@app.command("run")
def run_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="pipeline YAML")],
    trigger: Annotated[str, typer.Option(help="what started it: manual, schedule or alert:ID")] = "manual",
    json_out: JsonOpt = False,
) -> None:
    """Run every stage of FILE; exit 0 promoted, 1 rejected (gate failed or rolled back), other codes errors."""
    run = _runner(json_out).run(file, trigger)
    _show(run, json_out)
    _exit_for(run)


@app.command("resume")
def resume_cmd(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="run id (or its first 8 characters)")],
    json_out: JsonOpt = False,
) -> None:
    """Continue a failed or killed run at the stage that did not finish."""
    run = _runner(json_out).resume(run_id)
    _show(run, json_out)
    _exit_for(run)


@app.command("list")
def list_cmd(
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many runs, newest first")] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Pipeline runs, newest first."""
    from corral.pipeline.runs import RunStore

    runs = RunStore(registry().store).list(pipeline, limit)
    if json_out:
        print_json(runs)
        return
    rows = [
        [
            r.id[:8],
            r.pipeline,
            r.trigger,
            r.status,
            fmt_time(r.started_at),
            fmt_time(r.finished_at),
            r.error or "",
        ]
        for r in runs
    ]
    print_table(
        "pipeline runs", ["run", "pipeline", "trigger", "status", "started", "finished", "error"], rows
    )


@app.command("status")
def status_cmd(
    run_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="run id; default: the newest run")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """One run's stages (status, output, duration) and, during or after its canary, the arms live."""
    from corral.errors import NotFoundError
    from corral.pipeline.runs import RunStore

    runs = RunStore(registry().store)
    if run_id is None:
        newest = runs.list(limit=1)
        if not newest:
            raise NotFoundError("no pipeline has run yet", hint="start one: corral pipeline run FILE")
        run_id = newest[0].id
    _show(runs.get(run_id), json_out)


def _arms(run: Any) -> list[dict[str, Any]]:
    from corral.pipeline.arms import arm_stats

    canary = run.output("canary")
    if not canary.get("since"):
        return []
    versions = [canary["production"], canary["candidate"]]
    stage = run.stage("canary")
    since, until = datetime.fromisoformat(canary["since"]), stage.finished_at if stage else None
    return arm_stats(registry().store, canary["deployment"], since, versions, until)


def _brief(output: dict[str, Any], width: int = 90) -> str:
    shown = {
        k: v
        for k, v in output.items()
        if k not in ("decisions", "gates", "query", "skipped", "rows_artifact")
    }
    if "gates" in output:
        shown["gates"] = {
            Path(g["gate"]).name: "passed" if g["passed"] else "failed" for g in output["gates"]
        }
    if output.get("decisions"):
        shown["decisions"] = len(output["decisions"])
    text = json.dumps(shown, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(run: Any, json_out: bool) -> None:
    arms = _arms(run)
    if json_out:
        from corral.cli.common import to_plain

        print_json({**to_plain(run), "arms": arms})
        return
    console.print(
        f"run [bold]{run.id}[/bold] of {run.pipeline} ({run.trigger}): [bold]{run.status}[/bold]"
        + (f" — {run.error}" if run.error else ""),
        highlight=False,
    )
    rows = [
        [
            s.name,
            s.status,
            f"{s.duration_s:.1f}s" if s.duration_s is not None else "",
            s.attempts,
            _brief(s.output) if s.output else (s.error or ""),
        ]
        for s in run.stages
    ]
    print_table(None, ["stage", "status", "duration", "tries", "output"], rows)
    if arms:
        print_table(
            "canary arms",
            ["version", "requests", "error rate", "p95 ms", "feedback", "rated"],
            [
                [
                    a["version"],
                    a["requests"],
                    _num(a["error_rate"]),
                    _num(a["latency_p95_ms"]),
                    _num(a["feedback_mean"]),
                    a["feedback_count"],
                ]
                for a in arms
            ],
        )
        decisions = run.output("canary").get("decisions") or []
        if decisions:
            console.print(f"last canary decision: {json.dumps(decisions[-1], default=str)}", highlight=False)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="pipeline")
