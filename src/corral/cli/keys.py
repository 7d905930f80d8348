"""`corral keys`: create (shown once), list and revoke gateway API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli import common

app = typer.Typer(help="Gateway API keys: create, list, revoke.", no_args_is_help=True)


def _keys():  # type: ignore[no-untyped-def]
    from corral.gateway.auth import KeyStore
    from corral.store import Store

    return KeyStore(Store.from_settings(common.settings()))


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="who or what uses the key")],
    models: Annotated[
        str | None, typer.Option("--models", help="deployments it may use, comma-separated (default: all)")
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option("--tpm", help="tokens per minute")] = None,
    budget: Annotated[float | None, typer.Option("--budget", help="USD per calendar month")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="may use the admin API and every model")] = False,
    viewer: Annotated[
        bool, typer.Option("--viewer", help="the dashboard and read-only admin GETs only, no models")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create a key and print it once: only its hash is stored."""
    chosen = [m.strip() for m in models.split(",") if m.strip()] if models else None
    import getpass

    raw, info = _keys().create(
        name, chosen, rpm=rpm, tpm=tpm, budget_usd=budget, admin=admin, viewer=viewer, actor=getpass.getuser()
    )
    if as_json:
        common.print_json({**info, "key": raw})
        return
    reach = "viewer: dashboard and read-only admin" if viewer else f"models: {', '.join(info['models'])}"
    common.console.print(f"created key {info['id']} '{name}' ({reach})")
    common.console.print("store it now; it is not shown again:")
    typer.echo(raw)


@app.command("list")
def list_keys(
    revoked: Annotated[bool, typer.Option("--revoked", help="include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Active keys (never the keys themselves: their prefixes)."""
    rows = _keys().list(include_revoked=revoked)
    if as_json:
        common.print_json(rows)
        return
    common.print_table(
        None,
        ["id", "name", "prefix", "models", "rpm", "tpm", "budget $/mo", "role", "created", "revoked"],
        [
            [
                r["id"],
                r["name"],
                r["prefix"] + "…",
                ",".join(r["models"]),
                r["rpm"],
                r["tpm"],
                r["budget_usd"],
                "admin" if r["admin"] else "viewer" if r.get("viewer") else "",
                r["created_at"],
                r["revoked_at"],
            ]
            for r in rows
        ],
    )


@app.command("revoke")
def revoke(key: Annotated[str, typer.Argument(help="id, name or prefix of the key")]) -> None:
    """Revoke a key; gateways stop accepting it within a second."""
    info = _keys().revoke(key)
    common.console.print(f"revoked key {info['id']} '{info['name']}'")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="keys")
