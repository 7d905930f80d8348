"""Leases: a row per background job that elects one replica (the holder) until the lease expires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from corral.store.db import Store
from corral.store.models import LeaseRow


def acquire(store: Store, name: str, holder: str, ttl_s: float, now: datetime | None = None) -> bool:
    """Take or renew the lease `name` for `holder`; True while this holder has it.

    A lease held by another replica is taken over only once it has expired, so a replica that dies
    hands the job on after at most `ttl_s`. The conditional UPDATE makes two takers race safely.
    """
    now = now or datetime.now(UTC)
    try:
        return _take(store, name, holder, now, now + timedelta(seconds=ttl_s))
    except IntegrityError:  # another replica created the row first
        return False


def _take(store: Store, name: str, holder: str, now: datetime, until: datetime) -> bool:
    with store.session() as session:
        row = session.get(LeaseRow, name)
        if row is None:
            session.add(LeaseRow(name=name, holder=holder, expires_at=until))
            return True
        expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
        if row.holder != holder and expires > now:
            return False
        taken = session.execute(
            update(LeaseRow)
            .where(
                LeaseRow.name == name, LeaseRow.holder == row.holder, LeaseRow.expires_at == row.expires_at
            )
            .values(holder=holder, expires_at=until)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(taken, "rowcount", 0))


def release(store: Store, name: str, holder: str) -> None:
    """Give the lease up now (on shutdown) so another replica takes it without waiting."""
    with store.session() as session:
        row = session.get(LeaseRow, name, with_for_update=True)
        if row is not None and row.holder == holder:
            session.delete(row)


def holder(store: Store, name: str) -> str | None:
    with store.session() as session:
        return session.scalar(select(LeaseRow.holder).where(LeaseRow.name == name))
