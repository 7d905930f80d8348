"""Plain records the registry hands out: no ORM objects leak past it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    tags: dict[str, Any]
    created_by: str
    created_at: datetime
    latest_version: int | None = None
    aliases: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    """One immutable version: full weights, a LoRA adapter over a base, or a remote endpoint."""

    name: str
    version: int
    kind: str  # weights | adapter | endpoint
    stage: str  # production | staging | registered | draining | retired (derived)
    aliases: list[str]
    artifact: str | None
    base_ref: str | None
    endpoint_url: str | None
    upstream_model: str | None
    api_key_env: str | None
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    tags: dict[str, Any]
    description: str
    created_by: str
    created_at: datetime
    retired_at: datetime | None = None
    artifact_purged: bool = False
    purge_requested: bool = False  # `retire --purge` asked; the files go once the version has drained
    created: bool = True  # False when `register` found a live version with the same files
    warnings: list[str] = field(default_factory=list)  # what `register` allowed but you should know

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class AliasEvent:
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str
    reason: str
    at: datetime
    is_rollback: bool = False


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    digest: str
    row_count: int
    schema_kind: str
    splits: dict[str, int]
    tags: dict[str, Any]
    metadata: dict[str, Any]
    lineage: dict[str, Any]
    created_by: str
    created_at: datetime
    created: bool = True  # False when an import matched an existing version's content

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class DatasetDiff:
    old: str
    new: str
    added: int
    removed: int
    unchanged: int
    added_rows: list[dict[str, Any]]
    removed_rows: list[dict[str, Any]]


@dataclass(frozen=True)
class PromptVersion:
    name: str
    version: int
    template: dict[str, Any]  # {"text": "..."} or {"messages": [{"role": ..., "content": ...}]}
    variables: list[str]
    aliases: list[str]
    tags: dict[str, Any]
    created_by: str
    created_at: datetime

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
