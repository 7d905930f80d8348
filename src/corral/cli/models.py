"""`corral models`: register, list, show, alias, history, rollback, retire."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli.common import (
    console,
    err_console,
    fmt_time,
    parse_tags,
    print_json,
    print_table,
    registry,
    to_plain,
)
from corral.errors import InvalidInputError
from corral.registry.types import AliasEvent, ModelVersion

app = typer.Typer(help="Models, their immutable versions, aliases and history.", no_args_is_help=True)
alias_app = typer.Typer(help="Move and inspect aliases (production, staging, ...).", no_args_is_help=True)
app.add_typer(alias_app, name="alias")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def _describe(v: ModelVersion) -> str:
    if v.kind == "endpoint":
        return f"{v.endpoint_url} ({v.upstream_model})"
    if v.kind == "adapter":
        return f"adapter over {v.base_ref}"
    return (v.artifact or "")[:19]


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="model name")],
    path: Annotated[
        str | None, typer.Argument(help="Hugging Face-format directory (or adapter directory)")
    ] = None,
    base: Annotated[str | None, typer.Option(help="base version for a LoRA adapter, e.g. support@1")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL instead of PATH")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="model name at the endpoint")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="variable holding the endpoint's API key")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    description: Annotated[str, typer.Option(help="what this version is")] = "",
    no_tokenizer: Annotated[
        bool, typer.Option("--no-tokenizer", help="register a weights directory that has no tokenizer")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Register the next version of NAME (identical files answer with the existing version)."""
    version = registry().models.register(
        name,
        path,
        base=base,
        endpoint=endpoint,
        upstream_model=upstream_model,
        api_key_env=api_key_env,
        tags=parse_tags(tag),
        description=description,
        tokenizer_required=not no_tokenizer,
    )
    for warning in version.warnings:
        err_console.print(f"warning: {warning}")
    if json_out:
        print_json(version)
    elif not version.created:
        console.print(f"identical to [bold]{version.ref}[/bold] (same files); no new version registered")
    else:
        console.print(f"registered [bold]{version.ref}[/bold] ({version.kind}) {_describe(version)}")


@app.command("list")
def list_models(json_out: JsonOpt = False) -> None:
    """All models with their latest version and aliases."""
    models = registry().models.list()
    if json_out:
        print_json(models)
        return
    print_table(
        "models",
        ["name", "latest", "aliases", "description", "created"],
        [
            [
                m.name,
                m.latest_version,
                ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())),
                m.description,
                fmt_time(m.created_at),
            ]
            for m in models
        ],
    )


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions), NAME@N or NAME@ALIAS")],
    json_out: JsonOpt = False,
) -> None:
    """One version in detail, or every version of a model."""
    reg = registry()
    versions = [reg.models.resolve(ref)] if "@" in ref else reg.models.versions(ref)
    evaluations = _evaluations(reg, versions[0].ref) if "@" in ref else []
    if json_out:
        print_json({**to_plain(versions[0]), "evaluations": evaluations} if "@" in ref else versions)
        return
    print_table(
        f"model {ref}",
        ["version", "kind", "stage", "aliases", "source", "tags", "created by", "created"],
        [
            [
                v.version,
                v.kind,
                v.stage,
                ", ".join(v.aliases),
                _describe(v),
                ", ".join(f"{k}={val}" for k, val in v.tags.items()),
                v.created_by,
                fmt_time(v.created_at),
            ]
            for v in versions
        ],
    )
    if "@" in ref:
        v = versions[0]
        for label, data in (("lineage", v.lineage), ("metrics", v.metrics)):
            if data:
                console.print(f"{label}: " + ", ".join(f"{k}={val}" for k, val in data.items()))
        for e in evaluations:
            scores = ", ".join(
                f"{k}={val['value']:.4g}" for k, val in e["summary"].items() if val.get("value") is not None
            )
            console.print(
                f"evaluation {e['id'][:12]} on {e['dataset']}:{e['split']} ({e['status']}): {scores}"
            )


def _evaluations(reg: Any, ref: str) -> list[dict[str, Any]]:
    """The version's stored evaluation runs, newest first (none when evaluation is not installed)."""
    try:
        from corral.evaluate import runs_of
    except ImportError:
        return []
    return [run.brief() for run in runs_of(reg.store, ref)]


@alias_app.command("set")
def alias_set(
    name: str,
    alias: str,
    version: Annotated[str, typer.Argument(help="version number or reference")],
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
) -> None:
    """Point ALIAS of NAME at VERSION."""
    v = registry().models.set_alias(name, alias, version, reason=reason)
    console.print(f"{name}@{alias} → version {v.version}")


@alias_app.command("remove")
def alias_remove(name: str, alias: str, reason: str = "") -> None:
    """Remove an alias (kept in the history)."""
    registry().models.remove_alias(name, alias, reason=reason)
    console.print(f"removed {name}@{alias}")


def print_history(title: str, events: list[AliasEvent], json_out: bool) -> None:
    if json_out:
        print_json(events)
        return
    print_table(
        title,
        ["when", "alias", "from", "to", "who", "reason"],
        [
            [
                fmt_time(e.at),
                e.alias,
                e.from_version or "-",
                e.to_version or "-",
                e.actor,
                ("rollback: " if e.is_rollback and e.reason != "rollback" else "") + e.reason,
            ]
            for e in events
        ],
    )


@alias_app.command("history")
def alias_history(
    name: str,
    alias: Annotated[str | None, typer.Argument(help="one alias (default all)")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Every move of NAME's aliases: from, to, who, when, why."""
    print_history(f"alias history of {name}", registry().models.alias_history(name, alias), json_out)


@app.command("rollback")
def rollback(
    name: str,
    alias: Annotated[str, typer.Argument(help="alias to move back")] = "production",
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
) -> None:
    """Move ALIAS (default production) back to its previous version."""
    v = registry().models.rollback(name, alias, reason=reason)
    console.print(f"rolled back {name}@{alias} → version {v.version}")


@app.command("retire")
def retire(
    ref: Annotated[str, typer.Argument(help="NAME@N")],
    purge: Annotated[bool, typer.Option(help="also delete its artifact files")] = False,
) -> None:
    """Stop serving a version: draining, then retired once nothing is in flight."""
    if "@" not in ref:
        raise InvalidInputError(f"name the version to retire, e.g. {ref}@1")
    v = registry().models.retire(ref, purge=purge)
    console.print(f"{v.ref} is {v.stage}{_retire_note(v)}")


def _retire_note(v: ModelVersion) -> str:
    if v.artifact_purged:
        return " (files purged)"
    if v.stage == "draining":
        then = "retires and its files are purged" if v.purge_requested else "retires"
        return f": a gateway still has requests on it; it {then} once they finish"
    return ""
