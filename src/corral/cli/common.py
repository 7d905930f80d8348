"""What every command shares: settings, the registry, output helpers, error reporting."""

from __future__ import annotations

import getpass
import importlib
import json
import sys
import traceback
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from corral.errors import CorralError

if TYPE_CHECKING:
    from corral.config import Settings
    from corral.registry import Registry

# Piped output gets a wide console so tables are not cut to 80 columns; a terminal keeps its width.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def _typer_click_errors(*names: str) -> tuple[type[BaseException], ...]:
    """typer 0.29 parses with its own copy of click (`typer._click`), whose exceptions are not click's."""
    try:
        from typer import _click  # type: ignore[attr-defined]
    except ImportError:  # older typer parses with click itself
        return ()
    found = (
        getattr(module, name, None)
        for module in (_click, getattr(_click, "exceptions", None))
        for name in names
    )
    return tuple({cls for cls in found if isinstance(cls, type)})


CLICK_ERRORS: tuple[type[BaseException], ...] = (
    click.exceptions.ClickException,
    *_typer_click_errors("ClickException"),
)
ABORT_ERRORS: tuple[type[BaseException], ...] = (
    click.exceptions.Abort,
    *_typer_click_errors("Abort"),
    KeyboardInterrupt,
)

# Command modules of later stages: `corral.cli.<module>` exposing `register(app)`. A stage whose
# optional dependencies are missing is skipped so the core CLI keeps working without them.
OPTIONAL_COMMANDS: list[str] = [
    "worker", "serve", "keys", "costs", "train", "data_cmd", "eval_cmd", "monitor_cmd",
]


@dataclass
class CLIState:
    config_path: str | None = None
    settings: Settings | None = None

    def reset(self) -> None:
        self.config_path = None
        self.settings = None


STATE = CLIState()


def settings() -> Settings:
    if STATE.settings is None:
        from corral.config import load_settings

        STATE.settings = load_settings(STATE.config_path)
    return STATE.settings


def registry() -> Registry:
    from corral.registry import open_registry

    return open_registry(settings(), actor=getpass.getuser())


def add_optional(app: typer.Typer, module_name: str) -> None:
    try:
        module = importlib.import_module(f"corral.cli.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("corral.cli."):
            return  # that stage is not built yet
        return  # its optional dependencies are not installed
    module.register(app)


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print one line for an error and return the exit code."""
    if isinstance(exc, CorralError):
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    if debug:
        traceback.print_exception(exc)
    err_console.print(
        f"[red]internal error:[/red] {type(exc).__name__}: {exc} (set CORRAL_DEBUG=1 for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    return 70


def to_plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_plain(value), indent=2, default=str))


def print_table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title, show_lines=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def fmt_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def parse_tags(pairs: list[str] | None) -> dict[str, str]:
    from corral.errors import InvalidInputError

    tags: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"invalid tag '{pair}'", hint="write --tag key=value")
        tags[key] = value
    return tags
