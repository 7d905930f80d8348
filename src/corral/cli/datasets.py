"""`corral datasets`: import, list, show, diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import console, fmt_time, parse_tags, print_json, print_table, registry
from corral.data.loaders import load_file
from corral.registry.types import DatasetVersion

app = typer.Typer(help="Versioned datasets (chat, prompt/completion, classification).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _row(d: DatasetVersion) -> list[object]:
    splits = ", ".join(f"{k}={v}" for k, v in sorted(d.splits.items()))
    return [d.ref, d.schema_kind, d.row_count, splits, d.digest[:19], d.created_by, fmt_time(d.created_at)]


COLUMNS = ["version", "kind", "rows", "splits", "digest", "created by", "created"]


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="dataset name")],
    path: Annotated[Path, typer.Argument(help="JSONL, CSV or Parquet file")],
    kind: Annotated[
        str | None, typer.Option(help="chat | prompt_completion | classification (default: detect)")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl | csv | parquet (default: extension)")
    ] = None,
    rejects: Annotated[
        Path | None, typer.Option(help="where bad rows go (default: PATH.rejects.jsonl)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a file as the next version of NAME (identical content answers with the existing version)."""
    loaded = load_file(path, kind, fmt=fmt, rejects=rejects)
    version = registry().datasets.register(
        name,
        loaded.rows,
        kind=loaded.kind,
        tags=parse_tags(tag),
        lineage={"source": str(path.resolve()), "read": loaded.total, "rejected": len(loaded.rejected)},
    )
    if not json_out:
        console.print(loaded.summary, highlight=False)
    if json_out:
        print_json(version)
    elif version.created:
        console.print(
            f"imported {version.row_count} rows as [bold]{version.ref}[/bold] ({version.schema_kind})"
        )
    else:
        console.print(f"{path} has the same content as [bold]{version.ref}[/bold]; no new version made")


@app.command("list")
def list_datasets(json_out: JsonOpt = False) -> None:
    """Every dataset at its latest version."""
    found = registry().datasets.list()
    if json_out:
        print_json(found)
    else:
        print_table("datasets", COLUMNS, [_row(d) for d in found])


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@N")],
    rows: Annotated[int, typer.Option(help="also print the first N rows")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """A dataset's versions, or one version with its lineage and first rows."""
    reg = registry()
    versions = [reg.datasets.get(ref)] if "@" in ref else reg.datasets.versions(ref)
    if json_out:
        print_json(versions[0] if "@" in ref else versions)
        return
    print_table(f"dataset {ref}", COLUMNS, [_row(d) for d in versions])
    if "@" in ref and versions[0].lineage:
        console.print("lineage: " + json.dumps(versions[0].lineage))
    for row in reg.datasets.rows(versions[-1].ref)[:rows]:
        console.print_json(json.dumps(row))


@app.command("diff")
def diff(old: str, new: str, json_out: JsonOpt = False) -> None:
    """Rows added and removed between two versions."""
    result = registry().datasets.diff(old, new)
    if json_out:
        print_json(result)
        return
    console.print(
        f"{result.old} → {result.new}: +{result.added} added, -{result.removed} removed, "
        f"{result.unchanged} unchanged"
    )
    for row in result.added_rows:
        console.print(f"[green]+ {json.dumps(row, ensure_ascii=False)}[/green]", highlight=False)
    for row in result.removed_rows:
        console.print(f"[red]- {json.dumps(row, ensure_ascii=False)}[/red]", highlight=False)
