"""Versioned, aliased objects: one lookup, alias and rollback implementation for models, prompts, datasets."""

from __future__ import annotations

import builtins
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.registry import aliases, owners
from corral.registry.refs import Ref, parse_ref
from corral.registry.types import AliasEvent
from corral.store import Store

Out = TypeVar("Out")


class Versioned(Generic[Out]):
    """Named owners with numbered versions: `name`, `name@3` and (when `aliased`) `name@alias`.

    A subclass names its tables and how to turn a row into its plain record (`_to_version`).
    A version table with a `lifecycle` column has retired versions: bare names skip them and
    aliases never point at them.
    """

    kind: ClassVar[str]  # model | prompt | dataset: the word in messages and in the alias table
    owner_table: ClassVar[Any]
    version_table: ClassVar[Any]
    owner_fk: ClassVar[str]  # the version table's column naming its owner
    aliased: ClassVar[bool] = True

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor

    # -- what a subclass supplies -------------------------------------------------------------
    def _to_version(self, session: Session, owner: Any, row: Any) -> Out:
        raise NotImplementedError

    # -- lookups --------------------------------------------------------------------------------
    @classmethod
    def _has_lifecycle(cls) -> bool:
        return hasattr(cls.version_table, "lifecycle")

    def _owner(self, session: Session, name: str, *, lock: bool = False) -> Any:
        return owners.find(session, self.owner_table, name, self.kind, lock=lock)

    def _of(self, owner: Any) -> Any:
        return getattr(self.version_table, self.owner_fk) == owner.id

    def _latest(self, session: Session, owner: Any, *, live_only: bool = False) -> int | None:
        query = select(func.max(self.version_table.version)).where(self._of(owner))
        if live_only and self._has_lifecycle():
            query = query.where(self.version_table.lifecycle.is_(None))
        return session.scalar(query)

    def _next_number(self, session: Session, owner: Any) -> int:
        return (self._latest(session, owner) or 0) + 1

    def _numbered(self, session: Session, owner: Any, number: int) -> Any:
        return session.scalar(
            select(self.version_table).where(self._of(owner), self.version_table.version == number)
        )

    def _version_row(self, session: Session, owner: Any, ref: Ref | str) -> Any:
        """The row a reference names; errors say what exists instead."""
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        number = parsed.version
        if parsed.alias is not None:
            if not self.aliased:
                raise InvalidInputError(f"{self.kind}s have no aliases; write {owner.name}@N or {owner.name}")
            number = aliases.current(session, self.kind, owner.id, parsed.alias)
            if number is None:
                known = ", ".join(sorted(aliases.aliases_of(session, self.kind, owner.id))) or "none"
                raise NotFoundError(
                    f"{self.kind} '{owner.name}' has no alias '{parsed.alias}' (aliases: {known})"
                )
        elif number is None:
            number = self._latest(session, owner, live_only=True)
            if number is None:
                raise NotFoundError(f"{self.kind} '{owner.name}' has no live version")
        row = self._numbered(session, owner, number)
        if row is None:
            latest = self._latest(session, owner)
            raise NotFoundError(f"{self.kind} '{owner.name}' has no version {number} (latest is {latest})")
        return row

    def _pointing(self, session: Session, owner: Any, number: int) -> builtins.list[str]:
        return sorted(a for a, v in aliases.aliases_of(session, self.kind, owner.id).items() if v == number)

    def _lookup(self, ref: str) -> Out:
        parsed = parse_ref(ref)
        with self.store.session() as session:
            owner = self._owner(session, parsed.name)
            return self._to_version(session, owner, self._version_row(session, owner, parsed))

    def _all_versions(self, name: str) -> builtins.list[Out]:
        with self.store.session() as session:
            owner = self._owner(session, name)
            rows = session.scalars(
                select(self.version_table).where(self._of(owner)).order_by(self.version_table.version)
            ).all()
            return [self._to_version(session, owner, row) for row in rows]

    # -- aliases --------------------------------------------------------------------------------
    def _target(self, name: str, version: str | int) -> Ref:
        """`3`, `name@3` or `name@staging` as a reference to a version of `name` (and of nothing else)."""
        text = str(version)
        ref = parse_ref(text if "@" in text else f"{name}@{text}")
        if ref.name != name:
            raise InvalidInputError(
                f"alias of {self.kind} '{name}' cannot point at a version of '{ref.name}'"
            )
        return ref

    @staticmethod
    def _lifecycle(row: Any) -> str | None:
        """`draining` or `retired` for a version that no longer serves; None for a live one."""
        return getattr(row, "lifecycle", None)

    def _move(self, session: Session, owner: Any, alias: str, version: int | None, reason: str) -> None:
        aliases.move(
            session,
            kind=self.kind,
            owner_id=owner.id,
            subject=owner.name,
            alias=alias,
            version=version,
            actor=self.actor,
            reason=reason,
        )

    def _refuse_unaliased(self) -> None:
        if not self.aliased:
            raise InvalidInputError(f"{self.kind}s have no aliases")

    def set_alias(self, name: str, alias: str, version: str | int, reason: str = "") -> Out:
        """Point `alias` at a live version (a number or a reference such as `support@staging`)."""
        self._refuse_unaliased()
        ref = self._target(name, version)
        with self.store.session() as session:
            owner = self._owner(session, name, lock=True)
            row = self._version_row(session, owner, ref)
            if self._lifecycle(row):
                raise ConflictError(
                    f"{name}@{row.version} is {self._lifecycle(row)}; an alias cannot point at it"
                )
            self._move(session, owner, alias, row.version, reason)
            return self._to_version(session, owner, row)

    def remove_alias(self, name: str, alias: str, reason: str = "") -> None:
        self._refuse_unaliased()
        with self.store.session() as session:
            owner = self._owner(session, name, lock=True)
            if aliases.current(session, self.kind, owner.id, alias) is None:
                raise NotFoundError(f"{self.kind} '{name}' has no alias '{alias}'")
            self._move(session, owner, alias, None, reason)

    def alias_history(self, name: str, alias: str | None = None) -> builtins.list[AliasEvent]:
        self._refuse_unaliased()
        with self.store.session() as session:
            return aliases.history(session, self.kind, self._owner(session, name).id, alias)

    def rollback(self, name: str, alias: str = "production", reason: str = "") -> Out:
        """Move `alias` back to the version it held before its current one (never to a retired one)."""
        self._refuse_unaliased()
        with self.store.session() as session:
            owner = self._owner(session, name, lock=True)

            def live(target: int) -> None:
                row = self._version_row(session, owner, Ref(name, version=target))
                if self._lifecycle(row):
                    raise ConflictError(
                        f"cannot roll back {name}@{alias} to version {target}: it is {self._lifecycle(row)}"
                    )

            target = aliases.rollback(
                session,
                kind=self.kind,
                owner_id=owner.id,
                subject=name,
                alias=alias,
                actor=self.actor,
                reason=reason,
                check=live,
            )
            return self._to_version(
                session, owner, self._version_row(session, owner, Ref(name, version=target))
            )
