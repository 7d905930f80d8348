"""`corral prompts`: register, list, show, render, alias, rollback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from corral.cli.common import console, fmt_time, print_json, print_table, registry
from corral.cli.models import print_history
from corral.config.yamlfile import parse_yaml
from corral.errors import InvalidInputError, NotFoundError

app = typer.Typer(help="Versioned prompt templates (sandboxed Jinja2).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def load_template(path: Path) -> dict[str, Any]:
    """A .yaml/.json file with `messages:` or `text:`; any other file is a plain text template."""
    if not path.is_file():
        raise NotFoundError(f"file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix in {".yaml", ".yml", ".json"}:
        data = parse_yaml(text, path)  # JSON is YAML too; a key set twice is refused in either
        if not isinstance(data, dict) or not ({"messages", "text"} & set(data)):
            raise InvalidInputError(f"{path} needs a top-level `messages:` list or `text:` string")
        return {k: data[k] for k in ("messages", "text") if k in data}
    return {"text": text}


def _parse_vars(pairs: list[str] | None, json_vars: str | None) -> dict[str, Any]:
    variables: dict[str, Any] = {}
    if json_vars:
        try:
            variables.update(json.loads(json_vars))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"--vars-json is not valid JSON: {exc.msg}") from None
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise InvalidInputError(f"invalid variable '{pair}'", hint="write --var name=value")
        variables[key] = value
    return variables


@app.command("register")
def register(name: str, path: Path, json_out: JsonOpt = False) -> None:
    """Register FILE as the next version of prompt NAME."""
    version = registry().prompts.register(name, load_template(path))
    if json_out:
        print_json(version)
    else:
        console.print(
            f"registered [bold]{version.ref}[/bold] (variables: {', '.join(version.variables) or 'none'})"
        )


@app.command("list")
def list_prompts(json_out: JsonOpt = False) -> None:
    """Every prompt at its latest version."""
    found = registry().prompts.list()
    if json_out:
        print_json(found)
        return
    print_table(
        "prompts",
        ["latest", "variables", "aliases", "created"],
        [[p.ref, ", ".join(p.variables), ", ".join(p.aliases), fmt_time(p.created_at)] for p in found],
    )


@app.command("show")
def show(ref: str, json_out: JsonOpt = False) -> None:
    """One prompt version and its template."""
    version = registry().prompts.get(ref)
    if json_out:
        print_json(version)
        return
    console.print(
        f"[bold]{version.ref}[/bold] aliases: {', '.join(version.aliases) or '-'}  "
        f"variables: {', '.join(version.variables) or '-'}"
    )
    console.print(yaml.safe_dump(version.template, sort_keys=False, allow_unicode=True), highlight=False)


@app.command("render")
def render(
    ref: str,
    var: Annotated[list[str] | None, typer.Option(help="name=value, repeatable")] = None,
    vars_json: Annotated[str | None, typer.Option("--vars-json", help="variables as a JSON object")] = None,
) -> None:
    """Render REF with variables; a missing variable is an error naming it."""
    result = registry().prompts.render(ref, _parse_vars(var, vars_json))
    typer.echo(result if isinstance(result, str) else json.dumps(result, indent=2, ensure_ascii=False))


@app.command("alias")
def alias(name: str, alias_name: str, version: str, reason: str = "") -> None:
    """Point ALIAS of prompt NAME at VERSION."""
    v = registry().prompts.set_alias(name, alias_name, version, reason=reason)
    console.print(f"{name}@{alias_name} → version {v.version}")


@app.command("history")
def history(
    name: str, alias_name: Annotated[str | None, typer.Argument()] = None, json_out: JsonOpt = False
) -> None:
    """Every move of the prompt's aliases."""
    print_history(
        f"alias history of prompt {name}", registry().prompts.alias_history(name, alias_name), json_out
    )


@app.command("rollback")
def rollback(
    name: str, alias_name: Annotated[str, typer.Argument()] = "production", reason: str = ""
) -> None:
    """Move a prompt alias back to its previous version."""
    v = registry().prompts.rollback(name, alias_name, reason=reason)
    console.print(f"rolled back prompt {name}@{alias_name} → version {v.version}")
