"""`corral costs`: requests, tokens and spend per key, model and day, from the traces."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import common


def costs(
    by: Annotated[
        str, typer.Option("--by", help="group by any of day, key, model (comma-separated)")
    ] = "day,key,model",
    since: Annotated[str | None, typer.Option("--since", help="first day, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option("--until", help="last day, YYYY-MM-DD")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Totals of traced requests: count, prompt and completion tokens, cost in USD."""
    from corral.gateway.costs import totals
    from corral.store import Store

    group_by = [g.strip() for g in by.split(",") if g.strip()]
    rows = totals(Store.from_settings(common.settings()), group_by, since, until)
    if as_json:
        common.print_json(rows)
        return
    columns = [*group_by, "requests", "prompt_tokens", "completion_tokens", "cost_usd"]
    table = [[*(row[c] for c in columns[:-1]), f"{row['cost_usd']:.6f}"] for row in rows]
    total = sum(row["cost_usd"] for row in rows)
    common.print_table(f"costs (total ${total:.6f})", columns, table)


def register(app: typer.Typer) -> None:
    app.command("costs")(costs)
