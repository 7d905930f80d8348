"""The `corral` command: global options, command groups, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys

import typer

from corral.cli import common

app = typer.Typer(
    name="corral",
    help="Serve, trace, version, evaluate and fine-tune language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _global(config: common.ConfigOption = None) -> None:
    common.use_config(config)


_registered = False


def _register_commands() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    # Imported here so `corral --help` stays fast; see common.OPTIONAL_COMMANDS for the later stages.
    from corral.cli import audit, config_cmd, datasets, db, init, models, privacy, prompts, quickstart

    app.add_typer(models.app, name="models")
    app.add_typer(datasets.app, name="datasets")
    app.add_typer(prompts.app, name="prompts")
    app.add_typer(db.app, name="db")
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(privacy.app, name="privacy")
    app.command("audit")(audit.audit)
    app.command("init")(init.init)
    app.command("quickstart")(quickstart.quickstart)
    for module_name, command in common.OPTIONAL_COMMANDS.items():
        common.add_optional(app, module_name, command)
    common.add_config_option(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every CorralError into one line and its exit code."""
    _register_commands()
    common.STATE.reset()
    try:
        # A command that raises typer.Exit(N) (e.g. a failed gate) makes click return N here.
        returned = app(args=argv, standalone_mode=False)
    except common.CLICK_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except common.ABORT_ERRORS:
        common.err_console.print("aborted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        code = common.report(exc, debug=bool(os.environ.get("CORRAL_DEBUG")))
        sys.exit(code)
    sys.exit(returned if isinstance(returned, int) else 0)


if __name__ == "__main__":
    main()
