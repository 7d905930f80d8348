"""Draining across processes: a version retires once no live gateway replica has a request on it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from corral.store.models import GatewayHeartbeatRow


@dataclass(frozen=True)
class Beat:
    """What one gateway replica last reported: when, until when it counts, and its in-flight counts."""

    at: datetime
    expires_at: datetime
    in_flight: dict[str, int]


def drained(ref: str, local_in_flight: int, beats: list[Beat], since: datetime | None, now: datetime) -> bool:
    """True when `ref` has nothing in flight here and every live replica has reported 0 since draining began.

    A replica whose heartbeat has expired is gone and does not count (no replica alive: drained at
    once). A live replica whose latest heartbeat predates `since` may have started a request before
    it saw the version draining, so the version waits for that replica's next heartbeat.
    """
    if local_in_flight:
        return False
    for beat in beats:
        if beat.expires_at <= now:
            continue
        if since is not None and beat.at <= since:
            return False
        if beat.in_flight.get(ref, 0):
            return False
    return True


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def beats(session: Session) -> list[Beat]:
    """Every replica's latest heartbeat (one row per replica, so the table stays small)."""
    rows = session.scalars(select(GatewayHeartbeatRow)).all()
    return [Beat(as_utc(r.at), as_utc(r.expires_at), _counts(r.in_flight)) for r in rows]


def _counts(raw: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (raw or {}).items()} if isinstance(raw, dict) else {}
