"""Leases in the store: one holder at a time per name (one replica runs a job), renewed or expired."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, update
from sqlalchemy.exc import IntegrityError

from corral.store.db import Store
from corral.store.models import LeaseRow


def default_holder() -> str:
    """This process, named so an operator can tell which replica holds a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class Lease:
    """`acquire()` takes the lease when free or expired, renews it when already ours; False otherwise.

    Every change is one conditional UPDATE (or one INSERT racing on the primary key), so two replicas
    calling at once cannot both win, on SQLite or PostgreSQL. A holder that stops renewing loses the
    lease after `ttl_s`.
    """

    def __init__(self, store: Store, name: str, ttl_s: float = 30.0, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl = timedelta(seconds=ttl_s)
        self.holder = holder or default_holder()

    def acquire(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        expires = now + self.ttl
        with self.store.session() as session:
            taken = session.execute(
                update(LeaseRow)
                .where(LeaseRow.name == self.name)
                .where((LeaseRow.holder == self.holder) | (LeaseRow.expires_at < now))
                .values(holder=self.holder, expires_at=expires)
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        if taken:
            return True
        try:
            with self.store.session() as session:
                session.execute(
                    insert(LeaseRow).values(
                        name=self.name, holder=self.holder, expires_at=expires, acquired_at=now
                    )
                )
        except IntegrityError:
            return False  # another holder has it and it has not expired
        return True

    def release(self) -> None:
        with self.store.session() as session:
            session.execute(
                delete(LeaseRow).where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
            )

    def holder_now(self) -> str | None:
        with self.store.session() as session:
            row = session.get(LeaseRow, self.name)
            return row.holder if row is not None else None
