"""`corral audit`: who changed what in the registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from corral.cli.common import fmt_time, print_json, print_table, registry


def audit(
    subject: Annotated[str | None, typer.Option(help="prefix such as model:support")] = None,
    actor: Annotated[str | None, typer.Option(help="only changes by this user or key")] = None,
    limit: Annotated[int, typer.Option(min=1, help="newest N entries")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List registry changes, newest first."""
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
