"""`corral audit --export`: the whole audit log (or since a date) as JSON lines or CSV, oldest first."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from corral.errors import InvalidInputError
from corral.store import Store
from corral.store.models import AuditRow

FIELDS = ("id", "at", "actor", "action", "subject", "before", "after")


def export_audit(store: Store, path: Path, *, since: datetime | None = None, fmt: str = "jsonl") -> int:
    """Write the audit entries to `path`; returns how many."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInputError(f"--format must be jsonl or csv, not '{fmt}'")
    query = select(AuditRow).order_by(AuditRow.id)
    if since:
        query = query.where(AuditRow.at >= since)
    count = 0
    with store.session() as session, open(path, "w", newline="") as handle:
        writer = csv.writer(handle) if fmt == "csv" else None
        if writer:
            writer.writerow(FIELDS)
        for row in session.scalars(query).yield_per(1000):
            values = [row.id, row.at.isoformat(), row.actor, row.action, row.subject, row.before, row.after]
            if writer:
                writer.writerow([json.dumps(v) if isinstance(v, dict) else v for v in values])
            else:
                handle.write(json.dumps(dict(zip(FIELDS, values, strict=True)), default=str) + "\n")
            count += 1
    return count
