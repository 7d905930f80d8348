"""Every `corral` command line in README.md and docs/*.md parses with today's CLI, so docs cannot drift.

Each line's click context is built (`make_context`, group by group) without running the command, so
an unknown command or option, a missing or extra argument and a badly typed value all fail here.
Command lines are those in ```bash (or untagged) blocks and in inline code; output goes in ```text.
Inline code that only names a command (`corral train`) must name one that exists.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer.main

from corral.cli.main import _register_commands, app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", "|", ";", "&"}
REDIRECT = re.compile(r"\d?(>>?|<)(&\d)?")  # > file, 2>&1, < file: the shell's, not the command's
INLINE = re.compile(r"`(corral [^`]+)`")


def command_lines(text: str) -> list[tuple[int, str, bool]]:
    """(line number, text, inline?) of every shell line and inline code span that may hold a command."""
    found: list[tuple[int, str, bool]] = []
    fence = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence is None:
            found.extend((number, span, True) for span in INLINE.findall(line))
        elif fence in SHELL_FENCES:
            found.append((number, stripped.removeprefix("$ "), False))
    return found


def corral_commands(line: str) -> list[list[str]]:
    """The argument lists of the corral commands in one shell line (`a && corral x`, `torchrun -m ...`)."""
    words = shlex.split(line, comments=True)
    commands, current = [], []
    redirected = [bool(REDIRECT.fullmatch(w)) for w in words]  # the word and, after `>` or `<`, its file
    words = [
        w
        for i, w in enumerate(words)
        if not (redirected[i] or i and redirected[i - 1] and "&" not in words[i - 1])
    ]
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            current.append(word)
            continue
        while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
            current.pop(0)  # VAR=value before the command
        if current[:1] == ["corral"]:
            commands.append(current[1:])
        elif "corral.cli.main" in current:  # python -m corral.cli.main ..., torchrun ... -m corral.cli.main
            commands.append(current[current.index("corral.cli.main") + 1 :])
        current = []
    return commands


def documented() -> list[tuple[str, list[str], bool]]:
    cases = []
    for path in DOCS:
        for number, line, inline in command_lines(path.read_text(encoding="utf-8")):
            for args in corral_commands(line):
                where = f"{path.relative_to(ROOT)}:{number}: corral {shlex.join(args)}"
                cases.append((where, args, inline))
    return cases


def parse(args: list[str], name_only: bool = False) -> None:
    """Build the context of every group and of the command itself, invoking nothing. `name_only`:
    a bare mention such as `corral keys` or `corral train` only has to name a command that exists."""
    _register_commands()
    command = typer.main.get_command(app)
    if name_only:
        ctx = command.context_class(command, info_name="corral")
        for word in args:
            if not hasattr(command, "get_command"):
                break  # words after the command: parse the whole line
            found = command.get_command(ctx, word)
            assert found is not None, f"no command '{word}' under '{ctx.command_path}'"
            command, ctx = found, found.context_class(found, info_name=word, parent=ctx)
        else:
            return
        command = typer.main.get_command(app)
    ctx = command.make_context("corral", list(args))
    while hasattr(command, "resolve_command"):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx)


CASES = documented()


def test_the_docs_show_commands_at_all():
    assert len(CASES) > 30
    assert any(args[:1] == ["serve"] and "--config" in args for _, args, _ in CASES)


@pytest.mark.parametrize(("args", "inline"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_documented_command_line_parses(args, inline):
    parse(args, name_only=inline)


@pytest.mark.parametrize(
    "args",
    [["models", "show"], ["models", "show", "a", "b"], ["keys", "create", "--rpm", "x"], ["nosuch"]],
)
def test_parse_catches_counts_types_and_names(args):
    with pytest.raises(Exception) as info:
        parse(args)
    assert "Usage" in type(info.value).__name__ or "Parameter" in type(info.value).__name__
    with pytest.raises(AssertionError, match="no command 'nosuch'"):
        parse(["nosuch"] if args[0] == "nosuch" else [*args[:1], "nosuch"], name_only=True)
