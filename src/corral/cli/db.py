"""`corral db`: apply and inspect store migrations."""

from __future__ import annotations

import typer

from corral.cli.common import console, settings
from corral.store import Store
from corral.store.migrate import current_revision, head_revision, upgrade

app = typer.Typer(help="The SQL store's schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (never drops data)."""
    store = Store.from_settings(settings())
    before = current_revision(store)
    upgrade(store)
    after = current_revision(store)
    if before == after:
        console.print(f"{store.safe_url()} is up to date (revision {after})")
    else:
        console.print(f"upgraded {store.safe_url()} from {before or 'empty'} to {after}")


@app.command("status")
def db_status() -> None:
    """The store's URL and migration revision."""
    store = Store.from_settings(settings())
    current, head = current_revision(store), head_revision()
    state = "up to date" if current == head else "needs `corral db upgrade`"
    console.print(f"{store.safe_url()}: revision {current or 'empty'} (head {head}) — {state}")
