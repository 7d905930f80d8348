"""`corral audit`: who changed what in the registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from corral.cli.common import console, fmt_time, print_json, print_table, registry
from corral.errors import InvalidInputError


def parse_day(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInputError(f"{option} must be YYYY-MM-DD, not '{value}'") from None


def audit(
    subject: Annotated[str | None, typer.Option(help="prefix such as model:support")] = None,
    actor: Annotated[str | None, typer.Option(help="only changes by this user or key")] = None,
    limit: Annotated[int, typer.Option(min=1, help="newest N entries")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
    export: Annotated[Path | None, typer.Option("--export", help="write the whole log to FILE")] = None,
    since: Annotated[str | None, typer.Option(help="with --export: entries from YYYY-MM-DD on")] = None,
    fmt: Annotated[str, typer.Option("--format", help="with --export: jsonl or csv")] = "jsonl",
) -> None:
    """List registry changes, newest first; or --export the log (oldest first) to a file."""
    if export is not None:
        from corral.privacy import export_audit

        count = export_audit(registry().store, export, since=parse_day(since, "--since"), fmt=fmt)
        console.print(f"wrote {count} audit entries to {export}")
        return
    if since is not None:
        raise InvalidInputError("--since applies to --export")
    entries = registry().audit.list(subject=subject, actor=actor, limit=limit)
    if json_out:
        print_json(entries)
        return
    compact = lambda d: "" if d is None else json.dumps(d, default=str)[:80]  # noqa: E731
    print_table(
        "audit log",
        ["when", "who", "action", "subject", "before", "after"],
        [
            [fmt_time(e.at), e.actor, e.action, e.subject, compact(e.before), compact(e.after)]
            for e in entries
        ],
    )
