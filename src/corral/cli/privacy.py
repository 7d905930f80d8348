"""`corral privacy delete --user ID`: forget one user everywhere, and print what was removed."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.common import console, print_json, print_table, registry, settings

app = typer.Typer(help="Privacy requests: delete a user's data.", no_args_is_help=True)


@app.command("delete")
def delete(
    user: Annotated[str, typer.Option("--user", help="the `user` the requests were sent with")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count what would go; change nothing")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
) -> None:
    """Purge USER's traces (and shadow copies), feedback, dataset rows, spooled traces; flag models."""
    from corral.privacy import erase_user

    report = erase_user(registry(), user, dry_run=dry_run, spool_dir=settings().tracing.resolved_spool_dir())
    if json_out:
        print_json(report.as_dict())
        return
    verb = "would remove" if dry_run else "removed"
    print_table(f"{verb} for user {user}", ["table", "rows"], [[t, n] for t, n in report.tables.items()])
    for entry in report.datasets:
        new = f", now {entry['new_version']}" if entry.get("new_version") else ""
        console.print(f"dataset {entry['version']}: {entry['rows_removed']} rows, artifact deleted{new}")
    console.print(f"spooled traces: {report.spool_lines}")
    for ref in report.models_flagged:
        console.print(f"model {ref}: tagged trained_on_deleted_data (retrain without the deleted rows)")
    if report.unruled_tables:
        console.print(f"[yellow]tables with no purge rule: {', '.join(report.unruled_tables)}[/yellow]")
