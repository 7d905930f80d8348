"""Dashboard logins kept in the store, so a session made on one gateway replica works on every other."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from corral.gateway.auth import ApiKey, _from_row
from corral.store import Store
from corral.store.models import ApiKeyRow, DashboardSessionRow

SESSION_TTL_S = 8 * 3600
ADMIN = ApiKey(id=None, name="admin", models=frozenset({"*"}), is_admin=True)


@dataclass(frozen=True)
class Session:
    key: ApiKey
    csrf: str
    expires: datetime
    token_hash: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Only the token's SHA-256 is stored. A session ends at logout, at expiry, when its key is revoked,
    or (for the configured admin key, `admin_hash`) when that key changes."""

    def __init__(self, store: Store, admin_hash: str | None = None, ttl_s: float = SESSION_TTL_S) -> None:
        self.store = store
        self.admin_hash = admin_hash
        self.ttl_s = ttl_s

    def create(self, key_hash: str, key: ApiKey, now: datetime | None = None) -> tuple[str, Session]:
        """A new session for the key whose SHA-256 is `key_hash`; returns the cookie's token."""
        now = now or datetime.now(UTC)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        row = DashboardSessionRow(
            token_hash=_hash(token), key_hash=key_hash, csrf=csrf, created_at=now,
            expires_at=now + timedelta(seconds=self.ttl_s),
        )  # fmt: skip
        with self.store.session() as session:
            session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at < now))
            session.add(row)
        return token, Session(key, csrf, row.expires_at, row.token_hash)

    def get(self, token: str, now: datetime | None = None) -> Session | None:
        """The live session of `token`, or None (unknown, expired, logged out, or its key revoked)."""
        now = now or datetime.now(UTC)
        with self.store.session() as session:
            row = session.get(DashboardSessionRow, _hash(token))
            if row is None:
                return None
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
            if expires <= now:
                return None
            if self.admin_hash is not None and hmac.compare_digest(row.key_hash, self.admin_hash):
                return Session(ADMIN, row.csrf, expires, row.token_hash)
            key_row = session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.key_hash == row.key_hash, ApiKeyRow.revoked_at.is_(None))
            )
            key = _from_row(key_row) if key_row is not None else None
            if key is None or not (key.is_admin or key.is_viewer):
                return None
            return Session(key, row.csrf, expires, row.token_hash)

    def end(self, session: Session) -> None:
        with self.store.session() as db:
            db.execute(
                delete(DashboardSessionRow).where(DashboardSessionRow.token_hash == session.token_hash)
            )
