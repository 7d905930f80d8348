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
from corral.registry import audit, owners
from corral.registry.refs import check_name
from corral.registry.types import DatasetDiff, DatasetVersion
from corral.registry.versioned import Versioned
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


class DatasetRegistry(Versioned[DatasetVersion]):
    """Datasets: versioned like models and prompts, addressed by number only (no aliases)."""

    kind = "dataset"
    owner_table = DatasetRow
    version_table = DatasetVersionRow
    owner_fk = "dataset_id"
    aliased = False

    def __init__(self, store: Store, artifacts: ArtifactStore, actor: str) -> None:
        super().__init__(store, actor)
        self.artifacts = artifacts

    def _to_version(self, session: Session, owner: DatasetRow, row: DatasetVersionRow) -> DatasetVersion:
        return _to_version(owner.name, row)

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
            number = self._next_number(session, dataset)
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
        return self._lookup(ref)

    def versions(self, name: str) -> builtins.list[DatasetVersion]:
        return self._all_versions(name)

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
