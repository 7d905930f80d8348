"""Datasets: named, versioned, content-hashed JSONL with splits, lineage and diffs."""

from __future__ import annotations

import builtins
import json
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.artifacts import ArtifactStore
from corral.data.rows import canonical, validate_rows, with_splits
from corral.errors import InvalidInputError, NotFoundError
from corral.registry import audit, owners
from corral.registry.refs import check_name, parse_ref
from corral.registry.types import DatasetDiff, DatasetVersion
from corral.store import Store
from corral.store.models import DatasetRow, DatasetVersionRow


def _to_version(name: str, row: DatasetVersionRow, created: bool = True) -> DatasetVersion:
    return DatasetVersion(
        name=name,
        version=row.version,
        digest=row.digest,
        row_count=row.row_count,
        schema_kind=row.schema_kind,
        splits=dict(row.splits or {}),
        tags=dict(row.tags or {}),
        metadata=dict(row.meta or {}),
        lineage=dict(row.lineage or {}),
        created_by=row.created_by,
        created_at=row.created_at,
        created=created,
    )


class DatasetRegistry:
    def __init__(self, store: Store, artifacts: ArtifactStore, actor: str) -> None:
        self.store = store
        self.artifacts = artifacts
        self.actor = actor

    def _dataset_row(self, session: Session, name: str, *, lock: bool = False) -> DatasetRow:
        return owners.find(session, DatasetRow, name, "dataset", lock=lock)

    def _version_row(self, session: Session, dataset: DatasetRow, ref: str) -> DatasetVersionRow:
        parsed = parse_ref(ref)
        if parsed.alias is not None:
            raise InvalidInputError(f"datasets have no aliases; write {dataset.name}@N or {dataset.name}")
        latest = session.scalar(
            select(func.max(DatasetVersionRow.version)).where(DatasetVersionRow.dataset_id == dataset.id)
        )
        number = parsed.version or latest
        row = session.scalar(
            select(DatasetVersionRow).where(
                DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.version == number
            )
        )
        if row is None:
            raise NotFoundError(f"dataset '{dataset.name}' has no version {number} (latest is {latest})")
        return row

    def register(
        self,
        name: str,
        rows: builtins.list[dict[str, Any]],
        *,
        kind: str | None = None,
        lineage: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        description: str = "",
    ) -> DatasetVersion:
        """Store rows as the next version; identical content returns the existing version (created=False)."""
        check_name(name, "dataset name")
        kind = validate_rows(rows, kind, source=f"dataset '{name}'")
        rows = with_splits(rows)
        body = "".join(canonical(row) + "\n" for row in rows).encode()
        digest = self.artifacts.put_bytes(body)
        splits = dict(Counter(row["split"] for row in rows))
        with self.store.session() as session:
            dataset, _ = owners.find_or_create(
                session, DatasetRow, name, description=description, created_by=self.actor
            )
            existing = session.scalar(
                select(DatasetVersionRow).where(
                    DatasetVersionRow.dataset_id == dataset.id, DatasetVersionRow.digest == digest
                )
            )
            if existing is not None:
                return _to_version(name, existing, created=False)
            number = (
                session.scalar(
                    select(func.max(DatasetVersionRow.version)).where(
                        DatasetVersionRow.dataset_id == dataset.id
                    )
                )
                or 0
            ) + 1
            row = DatasetVersionRow(
                dataset_id=dataset.id,
                version=number,
                digest=digest,
                row_count=len(rows),
                schema_kind=kind,
                splits=splits,
                tags=tags or {},
                meta=metadata or {},
                lineage=lineage or {},
                created_by=self.actor,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                self.actor,
                "dataset.register",
                f"dataset:{name}@{number}",
                None,
                {"digest": digest, "rows": len(rows), "kind": kind, "lineage": lineage or {}},
            )
            return _to_version(name, row)

    def get(self, ref: str) -> DatasetVersion:
        parsed = parse_ref(ref)
        with self.store.session() as session:
            dataset = self._dataset_row(session, parsed.name)
            return _to_version(dataset.name, self._version_row(session, dataset, ref))

    def versions(self, name: str) -> builtins.list[DatasetVersion]:
        with self.store.session() as session:
            dataset = self._dataset_row(session, name)
            rows = session.scalars(
                select(DatasetVersionRow)
                .where(DatasetVersionRow.dataset_id == dataset.id)
                .order_by(DatasetVersionRow.version)
            ).all()
            return [_to_version(name, row) for row in rows]

    def list(self) -> builtins.list[DatasetVersion]:
        """The latest version of every dataset."""
        with self.store.session() as session:
            latest = (
                select(DatasetVersionRow.dataset_id, func.max(DatasetVersionRow.version).label("v"))
                .group_by(DatasetVersionRow.dataset_id)
                .subquery()
            )
            found = session.execute(
                select(DatasetRow.name, DatasetVersionRow)
                .join(DatasetVersionRow, DatasetVersionRow.dataset_id == DatasetRow.id)
                .join(
                    latest,
                    (latest.c.dataset_id == DatasetVersionRow.dataset_id)
                    & (latest.c.v == DatasetVersionRow.version),
                )
                .order_by(DatasetRow.name)
            ).all()
            return [_to_version(name, row) for name, row in found]

    def rows(self, ref: str, split: str | None = None) -> builtins.list[dict[str, Any]]:
        version = self.get(ref)
        lines = self.artifacts.get_bytes(version.digest).decode().splitlines()
        rows = [json.loads(line) for line in lines if line]
        return [r for r in rows if r.get("split") == split] if split else rows

    def diff(self, old: str, new: str, *, show: int = 5) -> DatasetDiff:
        """Rows added and removed between two versions (rows compared by canonical content)."""
        old_v, new_v = self.get(old), self.get(new)
        old_rows = {canonical(r): r for r in self.rows(old_v.ref)}
        new_rows = {canonical(r): r for r in self.rows(new_v.ref)}
        added = [new_rows[k] for k in new_rows if k not in old_rows]
        removed = [old_rows[k] for k in old_rows if k not in new_rows]
        return DatasetDiff(
            old_v.ref,
            new_v.ref,
            len(added),
            len(removed),
            len(new_rows) - len(added),
            added[:show],
            removed[:show],
        )
