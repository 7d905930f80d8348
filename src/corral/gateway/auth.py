"""API keys: created once and shown once, stored as SHA-256, checked from memory on the hot path."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select

from corral.errors import AuthenticationError, InvalidInputError, NotFoundError, PermissionDeniedError
from corral.store import Store
from corral.store.models import ApiKeyRow, utcnow

KEY_PREFIX = "sk-corral-"
NEGATIVE_TTL_S = 2.0


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: int | None
    name: str
    models: frozenset[str]
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    is_admin: bool = False
    is_viewer: bool = False  # the dashboard and read-only admin GETs, no models

    def reaches(self, deployment: str) -> bool:
        if self.is_viewer and not self.is_admin:
            return False
        return self.is_admin or "*" in self.models or deployment in self.models

    def check(self, deployment: str) -> None:
        if not self.reaches(deployment):
            raise PermissionDeniedError(f"this key ('{self.name}') may not use model '{deployment}'")


ANONYMOUS = ApiKey(id=None, name="anonymous", models=frozenset({"*"}))


def _from_row(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        models=frozenset(row.models or []),
        rpm=row.rpm,
        tpm=row.tpm,
        budget_usd=row.budget_usd,
        is_admin=row.is_admin,
        is_viewer=row.is_viewer,
    )


def describe(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "models": list(row.models or []),
        "rpm": row.rpm,
        "tpm": row.tpm,
        "budget_usd": row.budget_usd,
        "admin": row.is_admin,
        "viewer": row.is_viewer,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(timespec="seconds") if row.created_at else None,
        "revoked_at": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
    }


class KeyStore:
    """Keys in the SQL store. Only hashes are kept, so a lost key is revoked and replaced, never recovered."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self,
        name: str,
        models: list[str] | None = None,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        admin: bool = False,
        viewer: bool = False,
        actor: str = "admin",
    ) -> tuple[str, dict[str, Any]]:
        """A new key: (the key itself, shown only now; its description). A viewer key reaches no model."""
        if not name or len(name) > 128:
            raise InvalidInputError("a key needs a name of 1 to 128 characters", hint="pass --name")
        if viewer and (admin or models):
            raise InvalidInputError("a viewer key only reads the dashboard: no --admin, no --models")
        for value, label in ((rpm, "rpm"), (tpm, "tpm"), (budget_usd, "budget")):
            if value is not None and value < 0:
                raise InvalidInputError(f"--{label} must be 0 or more")
        raw = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            name=name,
            key_hash=hash_key(raw),
            prefix=raw[: len(KEY_PREFIX) + 4],
            models=[] if viewer else sorted(set(models or ["*"])),
            rpm=rpm,
            tpm=tpm,
            budget_usd=budget_usd,
            is_admin=admin,
            is_viewer=viewer,
            created_by=actor,
        )
        with self.store.session() as session:
            session.add(row)
            session.flush()
            return raw, describe(row)

    def list(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self.store.session() as session:
            return [describe(row) for row in session.scalars(query).all()]

    def revoke(self, id_or_name: str) -> dict[str, Any]:
        """Revoke by id, name or the shown prefix; a name shared by several keys is refused as ambiguous."""
        with self.store.session() as session:
            condition = [ApiKeyRow.name == id_or_name, ApiKeyRow.prefix == id_or_name]
            if id_or_name.isascii() and id_or_name.isdigit() and len(id_or_name) < 10:
                condition.append(ApiKeyRow.id == int(id_or_name))
            rows = session.scalars(
                select(ApiKeyRow).where(or_(*condition), ApiKeyRow.revoked_at.is_(None))
            ).all()
            if not rows:
                raise NotFoundError(f"no active key with id, name or prefix '{id_or_name}'")
            if len(rows) > 1:
                ids = ", ".join(str(r.id) for r in rows)
                raise InvalidInputError(f"'{id_or_name}' matches keys {ids}", hint="revoke by id")
            rows[0].revoked_at = utcnow()
            return describe(rows[0])

    def active(self) -> dict[str, ApiKey]:
        with self.store.session() as session:
            rows = session.scalars(select(ApiKeyRow).where(ApiKeyRow.revoked_at.is_(None))).all()
            return {row.key_hash: _from_row(row) for row in rows}

    def find(self, key_hash: str) -> ApiKey | None:
        with self.store.session() as session:
            row = session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
            )
            return _from_row(row) if row else None

    def signature(self) -> tuple[Any, ...]:
        """Changes whenever a key is created or revoked: cheap to poll."""
        with self.store.session() as session:
            return tuple(
                session.execute(
                    select(func.count(), func.max(ApiKeyRow.id), func.count(ApiKeyRow.revoked_at))
                ).one()
            )


class KeyRing:
    """The keys in memory. A key created on another replica is looked up once, then cached."""

    def __init__(self, keys: KeyStore, admin_key: str | None, require_keys: bool = True) -> None:
        self.keys = keys
        self.require_keys = require_keys
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._by_hash: dict[str, ApiKey] = {}
        self._unknown: dict[str, float] = {}
        self._digests: dict[str, str] = {}  # key → its hash, so each key is hashed once
        self.signature: tuple[Any, ...] | None = None

    def refresh(self) -> None:
        """Reload from the store when something changed (called from the poller thread)."""
        signature = self.keys.signature()
        if signature != self.signature:
            self._by_hash = self.keys.active()
            self._unknown = {}
            self.signature = signature

    async def authenticate(self, authorization: str | None) -> ApiKey:
        raw = _bearer(authorization)
        if raw is None:
            if not self.require_keys:
                return ANONYMOUS
            raise AuthenticationError(
                "missing API key",
                hint="send 'Authorization: Bearer sk-...'; create one with `corral keys create`",
            )
        digest = self._digests.get(raw)
        if digest is None:
            if len(self._digests) > 10_000:
                self._digests.clear()
            digest = self._digests[raw] = hash_key(raw)
        if digest == self._admin_hash:
            return ApiKey(id=None, name="admin", models=frozenset({"*"}), is_admin=True)
        key = self._by_hash.get(digest)
        if key is not None:
            return key
        if self._unknown.get(digest, 0.0) > time.monotonic():
            raise AuthenticationError("invalid API key")
        key = await asyncio.to_thread(self.keys.find, digest)
        if key is None:
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            self._unknown[digest] = time.monotonic() + NEGATIVE_TTL_S
            raise AuthenticationError("invalid API key")
        self._by_hash[digest] = key
        return key


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
