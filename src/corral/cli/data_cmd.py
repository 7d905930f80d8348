"""`corral datasets build` and `corral datasets from-traces`: new dataset versions made from old ones or traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import console, parse_tags, print_json, registry
from corral.data.build import BuildOptions, build_rows
from corral.data.loaders import load_file
from corral.data.traces import span_ago
from corral.errors import InvalidInputError, NotFoundError


def parse_when(text: str | None, option: str, now: datetime | None = None) -> datetime | None:
    """An ISO date or time (UTC unless it says otherwise), `today`, `yesterday`, or a span ago: 30m, 24h, 7d, 2w."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    word = text.strip().lower()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word in ("today", "yesterday"):
        return midnight - timedelta(days=1 if word == "yesterday" else 0)
    ago = span_ago(word, now)
    if ago is not None:
        return ago
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"{option} '{text}' is not a time",
            hint="write 2026-12-01, 2026-12-01T12:00, 24h, 7d, today or yesterday",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print_report(report: dict[str, object]) -> None:
    for step, counts in report.items():
        console.print(f"  {step}: {counts}", highlight=False)


def build(
    name: Annotated[str, typer.Argument(help="dataset to write the new version of")],
    source: Annotated[str, typer.Option("--from", help="a dataset version (NAME@N) or a file")],
    min_chars: Annotated[int, typer.Option(help="drop rows with fewer characters")] = 1,
    max_chars: Annotated[int | None, typer.Option(help="drop rows with more characters")] = None,
    dedupe: Annotated[bool, typer.Option(help="remove duplicate rows")] = True,
    near: Annotated[float, typer.Option(help="near-duplicate Jaccard threshold; 0 = exact only")] = 0.85,
    redact: Annotated[bool, typer.Option(help="replace PII with placeholders")] = True,
    resplit: Annotated[bool, typer.Option(help="re-split every row by hash, ignoring given splits")] = False,
    split: Annotated[str, typer.Option(help="train/validation/test percents")] = "80/10/10",
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Clean, redact, dedupe and split SOURCE into the next version of NAME."""
    try:
        ratios = dict(zip(("train", "validation", "test"), (int(p) for p in split.split("/")), strict=True))
    except ValueError:
        raise InvalidInputError(f"--split '{split}' must be three numbers like 80/10/10") from None
    options = BuildOptions(
        min_chars=min_chars,
        max_chars=max_chars,
        dedupe=dedupe,
        near_duplicates=near or None,
        redact=redact,
        resplit=resplit,
        split_ratios=ratios,
    )
    reg = registry()
    if Path(source).is_file():
        loaded = load_file(source)
        rows, kind, origin = loaded.rows, loaded.kind, {"source": str(Path(source).resolve())}
        if loaded.rejected:
            console.print(loaded.summary, highlight=False)
    else:
        try:
            dataset = reg.datasets.get(source)
        except (NotFoundError, InvalidInputError) as exc:
            raise NotFoundError(
                f"--from '{source}' is neither a file nor a dataset ({exc.message})",
                hint="give a JSONL, CSV or Parquet file, or a dataset version NAME@N",
            ) from None
        rows, kind, origin = reg.datasets.rows(dataset.ref), dataset.schema_kind, {"parent": dataset.ref}
    result = build_rows(rows, options, kind)
    version = reg.datasets.register(
        name,
        result.rows,
        kind=result.kind,
        tags=parse_tags(tag),
        lineage={**origin, "build": options.as_dict(), "report": result.report},
    )
    if json_out:
        print_json(version)
        return
    done = "built" if version.created else "same content as existing"
    console.print(f"{done} [bold]{version.ref}[/bold]: {version.row_count} rows {version.splits}")
    _print_report(result.report)


def from_traces(
    name: Annotated[str, typer.Argument(help="dataset to write the new version of")],
    deployment: Annotated[str | None, typer.Option(help="only traces of this deployment")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="only traces answered by NAME@N, NAME@alias, or any version of NAME"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="only traces at or after this time: 2026-12-01[T12:00], 24h, 7d, yesterday"),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="only traces before this time (same forms as --since)")
    ] = None,
    min_score: Annotated[float | None, typer.Option(help="only traces with feedback score ≥ this")] = None,
    max_score: Annotated[float | None, typer.Option(help="only traces with feedback score ≤ this")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many traces (newest first)")] = None,
    use_corrections: Annotated[
        bool,
        typer.Option(
            "--use-corrections",
            help="train on feedback corrections instead of the model's answer; skip low-rated traces without one",
        ),
    ] = False,
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Turn selected production traces into chat rows, redact PII, and register them as NAME."""
    from corral.data.traces import TraceQuery, dataset_from_traces

    window = parse_when(since, "--since"), parse_when(until, "--until")
    query = TraceQuery(deployment, model, *window, min_score, max_score, limit, use_corrections)
    version, report = dataset_from_traces(registry(), name, query, tags=parse_tags(tag))
    if json_out:
        print_json(version)
        return
    done = "built" if version.created else "same content as existing"
    console.print(f"{done} [bold]{version.ref}[/bold] from {report['traces']} traces: {version.splits}")
    _print_report(report)


def register(app: typer.Typer) -> None:
    """Add the commands to the existing `corral datasets` group."""
    for group in app.registered_groups:
        if group.name == "datasets" and group.typer_instance is not None:
            group.typer_instance.command("build")(build)
            group.typer_instance.command("from-traces")(from_traces)
