"""`corral config`: show the effective settings."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml

from corral.cli.common import settings
from corral.config import masked

app = typer.Typer(help="Settings from corral.yaml and CORRAL_* variables.", no_args_is_help=True)


@app.command("show")
def show(
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of YAML")] = False,
) -> None:
    """Print the effective configuration, secrets masked."""
    current = settings()
    data = masked(current)
    if json_out:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(f"# from {current.source or 'defaults'} and CORRAL_* variables")
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@app.command("check")
def check() -> None:
    """Validate the configuration and exit 0 when it is good."""
    current = settings()
    typer.echo(f"configuration OK ({current.source or 'defaults'})")
