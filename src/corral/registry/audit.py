"""The audit log: who changed what in the registry, and when, with before and after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.registry.types import AuditEntry
from corral.store import Store
from corral.store.models import AuditRow


def record(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Write one audit row inside the caller's transaction, so it commits with the change."""
    session.add(AuditRow(actor=actor, action=action, subject=subject, before=before, after=after))


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(
        self,
        *,
        subject: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if subject:
            query = query.where(AuditRow.subject.startswith(subject))
        if actor:
            query = query.where(AuditRow.actor == actor)
        if since:
            query = query.where(AuditRow.at >= since)
        with self.store.session() as session:
            rows = session.scalars(query).all()
            return [AuditEntry(r.id, r.at, r.actor, r.action, r.subject, r.before, r.after) for r in rows]
