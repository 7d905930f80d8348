"""API keys: created once and shown once, stored as SHA-256, checked from memory on the hot path."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select

from corral.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    StoreUnavailableError,
)
from corral.store import Store
from corral.store.models import ApiKeyRow, utcnow

log = logging.getLogger("corral.gateway.auth")
KEY_PREFIX = "sk-corral-"
NEGATIVE_TTL_S = 2.0
DIGEST_CACHE_BYTES = 1 << 20  # the key → hash cache is cleared past this
MAX_LOOKUPS = 8  # store look-ups of unknown keys at once; more get a 503 rather than a thread each
UNAVAILABLE = "API keys cannot be checked now: the store is unavailable"
MAX_CACHED_KEY_CHARS = 256  # real keys are ~53 characters; longer ones are hashed each time


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
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise InvalidInputError("a key name cannot contain control characters", hint="pass --name")
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
                raise ConflictError(f"'{id_or_name}' matches keys {ids}", hint="revoke by id")
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

    def __init__(
        self,
        keys: KeyStore,
        admin_key: str | None,
        require_keys: bool = True,
        lookup_timeout_s: float | None = None,
    ) -> None:
        self.keys = keys
        self.lookup_timeout_s = lookup_timeout_s or max(1.0, keys.store.statement_timeout_s or 30.0)
        self._lookups = 0  # store look-ups running in executor threads (a hung one keeps its thread)
        self.require_keys = require_keys
        self._admin_hash = hash_key(admin_key) if admin_key else None
        self._by_hash: dict[str, ApiKey] = {}
        self._unknown: dict[str, float] = {}
        # a key that authenticated → its hash, so each real key is hashed once; bounded by bytes, and
        # never holding what a stranger sent (a flood of made-up tokens must not stay in memory)
        self._digests: dict[str, str] = {}
        self._digest_bytes = 0
        self.signature: tuple[Any, ...] | None = None

    @property
    def admin_hash(self) -> str | None:
        """The configured admin key's SHA-256 (None without one)."""
        return self._admin_hash

    def refresh(self) -> None:
        """Reload from the store when something changed (called from the poller thread)."""
        signature = self.keys.signature()
        if signature != self.signature:
            self._by_hash = self.keys.active()
            self._unknown = {}
            self.signature = signature

    def _remember(self, raw: str, digest: str) -> None:
        if raw in self._digests or len(raw) > MAX_CACHED_KEY_CHARS:
            return
        if self._digest_bytes > DIGEST_CACHE_BYTES:
            self._digests.clear()
            self._digest_bytes = 0
        self._digests[raw] = digest
        self._digest_bytes += len(raw) + len(digest)

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
            digest = hash_key(raw)
        if digest == self._admin_hash:
            self._remember(raw, digest)
            return ApiKey(id=None, name="admin", models=frozenset({"*"}), is_admin=True)
        key = self._by_hash.get(digest)
        if key is not None:
            self._remember(raw, digest)
            return key
        if self._unknown.get(digest, 0.0) > time.monotonic():
            raise AuthenticationError("invalid API key")
        key = await self._find(digest)
        if key is None:
            if len(self._unknown) > 10_000:
                self._unknown.clear()
            self._unknown[digest] = time.monotonic() + NEGATIVE_TTL_S
            raise AuthenticationError("invalid API key")
        self._by_hash[digest] = key
        self._remember(raw, digest)
        return key

    async def _find(self, digest: str) -> ApiKey | None:
        """Look a key up in the store, bounded: a silent store answers 503, never a request that hangs.

        The message names no host or port (it goes to whoever sent the key); the log has the detail.
        """
        if self._lookups >= MAX_LOOKUPS:
            raise StoreUnavailableError(UNAVAILABLE, hint="try again shortly")
        self._lookups += 1
        found = asyncio.get_running_loop().run_in_executor(None, self.keys.find, digest)
        found.add_done_callback(self._lookup_done)
        try:
            return await asyncio.wait_for(asyncio.shield(found), self.lookup_timeout_s)
        except (TimeoutError, StoreUnavailableError) as exc:
            log.warning("could not look up an API key: %s", exc or "the store did not answer in time")
            raise StoreUnavailableError(UNAVAILABLE, hint="try again shortly") from None

    def _lookup_done(self, _future: Any) -> None:
        self._lookups -= 1


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
