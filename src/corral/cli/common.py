"""What every command shares: settings, the registry, output helpers, error reporting."""

from __future__ import annotations

import functools
import getpass
import importlib
import inspect
import json
import sys
import traceback
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from corral.cli.extras import missing_extra_error
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

# Command modules of later stages (`corral.cli.<module>` exposing `register(app)`) and the command
# each adds. One whose optional dependencies are missing still appears, and says which extra to
# install when used; any other import error (a typo, a bug) is raised, never hidden.
OPTIONAL_COMMANDS: dict[str, tuple[str, ...]] = {
    "worker": ("worker",),
    "serve": ("serve",),
    "keys": ("keys",),
    "costs": ("costs",),
    "train": ("train",),
    "data_cmd": ("datasets", "build"),
    "eval_cmd": ("eval",),
    "monitor_cmd": ("monitor", "alerts"),
    "pipeline_cmd": ("pipeline",),
}


@dataclass
class CLIState:
    config_path: str | None = None
    settings: Settings | None = None

    def reset(self) -> None:
        self.config_path = None
        self.settings = None


STATE = CLIState()


ConfigOption = Annotated[
    str | None,
    typer.Option("--config", "-c", help="corral.yaml to use (default: $CORRAL_CONFIG or ./corral.yaml)"),
]


def use_config(path: str | None) -> None:
    """`--config` given before the command or after it (`corral serve --config corral.yaml`)."""
    if path is not None:
        STATE.config_path = path
        STATE.settings = None


def with_config_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with a `--config` option of its own, so it is accepted after the command name too."""
    signature = inspect.signature(command, eval_str=True)
    if "config" in signature.parameters:
        return command

    @functools.wraps(command)
    def wrapper(*args: Any, config: str | None = None, **kwargs: Any) -> Any:
        use_config(config)
        return command(*args, **kwargs)

    option = inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigOption
    )
    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*signature.parameters.values(), option]
    )
    wrapper.__annotations__ = {**typing.get_type_hints(command, include_extras=True), "config": ConfigOption}
    return wrapper


def add_config_option(app: typer.Typer) -> None:
    """Give every command under `app` its own `--config` (every command reads the settings)."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = with_config_option(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_config_option(group.typer_instance)


def settings() -> Settings:
    if STATE.settings is None:
        from corral.config import load_settings

        STATE.settings = load_settings(STATE.config_path)
    return STATE.settings


def registry() -> Registry:
    from corral.registry import open_registry

    return open_registry(settings(), actor=getpass.getuser())


def add_optional(app: typer.Typer, module_name: str, command: tuple[str, ...]) -> None:
    """Register `corral.cli.<module_name>`; if a third-party package it needs is missing, a stand-in
    `command` that says which extra to install."""
    try:
        module = importlib.import_module(f"corral.cli.{module_name}")
    except ModuleNotFoundError as exc:
        error = missing_extra_error(exc, f"`corral {' '.join(command)}`")
        if error is None:
            raise
        _add_stand_in(app, command, error)
        return
    module.register(app)


def _add_stand_in(app: typer.Typer, command: tuple[str, ...], error: CorralError) -> None:
    def unavailable() -> None:
        raise error

    unavailable.__doc__ = f"(not installed: {error.hint})"
    group = app
    for name in command[:-1]:
        group = next(g.typer_instance for g in group.registered_groups if g.name == name and g.typer_instance)
    settings = {"ignore_unknown_options": True, "allow_extra_args": True}
    group.command(command[-1], context_settings=settings, add_help_option=False)(unavailable)


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print one line for an error and return the exit code."""
    if isinstance(exc, ModuleNotFoundError):
        exc = missing_extra_error(exc) or exc
    if isinstance(exc, CorralError):
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    if debug:
        traceback.print_exception(exc)
    err_console.print(
        f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (set CORRAL_DEBUG=1 for the traceback)",
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
