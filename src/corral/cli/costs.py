"""`corral costs`: requests, tokens and spend per day, key, deployment, model version or route, from the traces."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import common


def costs(
    by: Annotated[
        str,
        typer.Option("--by", help="group by any of day, key, deployment, version, route (comma-separated)"),
    ] = "day,key,deployment",  # costs.DEFAULT_GROUPS (the gateway is imported only when run)
    since: Annotated[str | None, typer.Option("--since", help="first day, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option("--until", help="last day, YYYY-MM-DD")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Totals of traced requests: count, prompt and completion tokens, cost in USD."""
    from corral.gateway.costs import group_names, totals
    from corral.store import Store

    group_by = group_names(by)
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
