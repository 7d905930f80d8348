"""Aliases for models and prompts: move, history, rollback. One mechanism for both kinds."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.errors import ConflictError
from corral.registry import audit
from corral.registry.refs import check_alias
from corral.registry.types import AliasEvent
from corral.store.models import AliasEventRow, AliasRow, utcnow


def aliases_of(session: Session, kind: str, owner_id: int) -> dict[str, int]:
    rows = session.scalars(select(AliasRow).where(AliasRow.kind == kind, AliasRow.owner_id == owner_id))
    return {row.name: row.version for row in rows}


def current(session: Session, kind: str, owner_id: int, alias: str) -> int | None:
    row = session.scalar(
        select(AliasRow).where(AliasRow.kind == kind, AliasRow.owner_id == owner_id, AliasRow.name == alias)
    )
    return row.version if row else None


def move(
    session: Session,
    *,
    kind: str,
    owner_id: int,
    subject: str,
    alias: str,
    version: int | None,
    actor: str,
    reason: str = "",
    is_rollback: bool = False,
) -> int | None:
    """Point `alias` at `version` (None removes it); records history and audit. Returns the old version.

    The caller holds the owner's row lock (FOR UPDATE on PostgreSQL; BEGIN IMMEDIATE on SQLite), so
    concurrent moves of one alias serialize and the history stays a chain.
    """
    check_alias(alias)
    row = session.scalar(
        select(AliasRow).where(AliasRow.kind == kind, AliasRow.owner_id == owner_id, AliasRow.name == alias)
    )
    old = row.version if row else None
    if old == version:
        return old
    if version is None:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(AliasRow(kind=kind, owner_id=owner_id, name=alias, version=version))
    else:
        row.version = version
        row.updated_at = utcnow()
    session.add(
        AliasEventRow(
            kind=kind,
            owner_id=owner_id,
            alias=alias,
            from_version=old,
            to_version=version,
            actor=actor,
            reason=reason,
            is_rollback=is_rollback,
        )
    )
    action = "alias.rollback" if is_rollback else ("alias.remove" if version is None else "alias.set")
    audit.record(
        session,
        actor,
        action,
        f"{kind}:{subject}@{alias}",
        {"version": old},
        {"version": version, "reason": reason},
    )
    return old


def history(session: Session, kind: str, owner_id: int, alias: str | None = None) -> list[AliasEvent]:
    query = select(AliasEventRow).where(AliasEventRow.kind == kind, AliasEventRow.owner_id == owner_id)
    if alias:
        query = query.where(AliasEventRow.alias == alias)
    rows = session.scalars(query.order_by(AliasEventRow.id))
    return [
        AliasEvent(r.alias, r.from_version, r.to_version, r.actor, r.reason, r.at, r.is_rollback)
        for r in rows
    ]


def rollback(
    session: Session,
    *,
    kind: str,
    owner_id: int,
    subject: str,
    alias: str,
    actor: str,
    reason: str,
    check: Callable[[int], None] | None = None,
) -> int:
    """Move `alias` back to the version it held before its current one; returns that version.

    `check` may veto the target (e.g. a retired model version) by raising.
    """
    if current(session, kind, owner_id, alias) is None:
        raise ConflictError(f"{kind} '{subject}' has no alias '{alias}' to roll back")
    target = rollback_target(history(session, kind, owner_id, alias), subject, alias)
    if check is not None:
        check(target)
    move(
        session,
        kind=kind,
        owner_id=owner_id,
        subject=subject,
        alias=alias,
        version=target,
        actor=actor,
        reason=reason or "rollback",
        is_rollback=True,
    )
    return target


def rollback_target(events: list[AliasEvent], subject: str, alias: str) -> int:
    """The version `alias` held before its current one, walking past earlier rollbacks.

    Rolling back twice goes two steps back (not back and forth): a rollback event undoes the move
    it reversed, so the walk skips each rollback together with the move it cancelled.
    """
    stack: list[int | None] = []
    for event in events:
        if event.is_rollback:
            if stack:
                stack.pop()
        else:
            stack.append(event.from_version)
    previous = stack[-1] if stack else None
    if previous is None:
        raise ConflictError(
            f"cannot roll back {subject}@{alias}: it has no earlier version in its history",
            hint=f"see `corral models alias history {subject}`",
        )
    return previous
