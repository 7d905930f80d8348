"""Finding and creating the named rows that own versions (models, datasets, prompts)."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.errors import NotFoundError
from corral.registry.refs import check_name

Owner = TypeVar("Owner")


def _name_column(table: Any) -> Any:
    return table.name


def find(session: Session, table: type[Owner], name: str, what: str, *, lock: bool = False) -> Owner:
    """The row named `name`, locked FOR UPDATE when asked; NotFoundError naming the listing command."""
    query: Any = select(table).where(_name_column(table) == check_name(name, f"{what} name"))
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFoundError(f"{what} '{name}' does not exist", hint=f"see `corral {what}s list`")
    return row


def find_or_create(session: Session, table: Any, name: str, **fields: Any) -> tuple[Any, bool]:
    """The locked row named `name`, created when missing; True when this call created it.

    A savepoint absorbs the race where another process creates the same name first.
    """
    query: Any = select(table).where(_name_column(table) == name).with_for_update()
    row = session.scalar(query)
    if row is not None:
        return row, False
    try:
        with session.begin_nested():
            row = table(name=name, **fields)
            session.add(row)
    except IntegrityError:
        return session.scalar(query), False
    return row, True


def next_version(session: Session, version_column: Any, owner_column: Any, owner_id: int) -> int:
    return int(session.scalar(select(func.max(version_column)).where(owner_column == owner_id)) or 0) + 1
