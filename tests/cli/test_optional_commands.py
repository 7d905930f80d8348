"""Command groups of optional stages: a missing extra says what to install; a typo or bug is never hidden."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

import corral.cli
from corral.cli import common
from corral.errors import CorralError


@pytest.fixture
def stage_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory searched as part of `corral.cli`, for command modules written by the test."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(corral.cli, "__path__", [*corral.cli.__path__, str(tmp_path)])
    return tmp_path


def new_app() -> typer.Typer:
    app = typer.Typer()
    app.command("other")(lambda: None)  # two commands, so the app stays a group
    return app


def write_stage(stage_dir: Path, name: str, body: str) -> str:
    (stage_dir / f"{name}.py").write_text(body)
    sys.modules.pop(f"corral.cli.{name}", None)
    return name


def test_a_typo_in_a_command_module_is_raised_not_hidden(stage_dir):
    name = write_stage(stage_dir, "typo_stage", "import corral.no_such_module\n")
    with pytest.raises(ModuleNotFoundError, match="corral.no_such_module"):
        common.add_optional(new_app(), name, ("typo",))
    with pytest.raises(ModuleNotFoundError):
        common.add_optional(new_app(), "no_such_stage", ("nothing",))


def test_a_missing_optional_dependency_leaves_a_command_that_names_the_extra(stage_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the `data` extra were not installed
    name = write_stage(stage_dir, "arrow_stage", "import pyarrow\n")
    app = new_app()
    common.add_optional(app, name, ("arrow",))
    with pytest.raises(CorralError) as info:
        app(["arrow", "--any", "args"], standalone_mode=False)
    assert "`corral arrow` needs the optional package 'pyarrow'" in str(info.value)
    assert info.value.hint == "pip install 'corral[data]'"


def test_a_missing_optional_dependency_at_run_time_says_which_extra(capsys):
    code = common.report(ModuleNotFoundError("No module named 'peft'", name="peft"))
    err = capsys.readouterr().err
    assert code == 1 and "needs the optional package 'peft'" in err and "corral[train]" in err
    assert common.report(ModuleNotFoundError("No module named 'corral.x'", name="corral.x")) == 70


def test_every_optional_command_module_registers():
    app = new_app()
    app.add_typer(typer.Typer(), name="datasets")
    for module_name, command in common.OPTIONAL_COMMANDS.items():
        common.add_optional(app, module_name, command)
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert {"worker", "serve", "keys", "costs", "train"} <= names
