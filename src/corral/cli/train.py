"""`corral train SPEC.yaml`: fine-tune a model (full or LoRA) and register the result as a new version."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from corral.cli.common import console, print_json, registry, settings
from corral.errors import InvalidInputError


def _overrides(pairs: list[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(
                f"invalid --set '{pair}'", hint="write --set key=value, e.g. --set max_steps=100"
            )
        out[key] = yaml.safe_load(value)
    return out


def train_command(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="training spec")],
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a spec key: key=value")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="print the new version as JSON")] = False,
) -> None:
    """Fine-tune BASE on DATASET as the spec says; runs under torchrun for DDP."""
    from corral.train import load_spec, train

    spec = load_spec(spec_path, _overrides(set_))
    result = train(
        spec,
        registry(),
        resume=resume,
        progress=progress and not json_out,
        console=console,
        settings=settings(),
    )
    if result.version is None:  # a DDP rank other than 0
        return
    if json_out:
        print_json(result.version)
        return
    metrics = ", ".join(f"{k}={v:g}" for k, v in result.metrics.items())
    console.print(f"[bold]{result.version.ref}[/bold] ({result.version.kind}): {metrics}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
