"""Models and their immutable versions: register, resolve, alias, roll back, retire."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from corral.artifacts import ArtifactStore
from corral.errors import ConflictError, InvalidInputError, NotFoundError
from corral.registry import aliases, audit, drain, owners, sources
from corral.registry.refs import check_name, parse_ref
from corral.registry.types import Model, ModelVersion
from corral.registry.versioned import Versioned
from corral.store import Store
from corral.store.models import ModelRow, ModelVersionRow, utcnow

KIND = "model"
STAGE_ALIASES = ("production", "staging")


def _stage(row: ModelVersionRow, pointing: list[str]) -> str:
    if row.lifecycle:
        return row.lifecycle
    for alias in STAGE_ALIASES:
        if alias in pointing:
            return alias
    return "registered"


class ModelRegistry(Versioned[ModelVersion]):
    """Registry operations on models. Every change is one transaction with its audit row."""

    kind = KIND
    owner_table = ModelRow
    version_table = ModelVersionRow
    owner_fk = "model_id"

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        actor: str,
        in_flight: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(store, actor)
        self.artifacts = artifacts
        # How many requests a version is serving; the gateway wires the real count.
        self.in_flight = in_flight or (lambda ref: 0)

    def _to_version(self, session: Session, model: ModelRow, row: ModelVersionRow) -> ModelVersion:
        pointing = self._pointing(session, model, row.version)
        base_ref = None
        if row.base_version_id is not None:
            base = session.get(ModelVersionRow, row.base_version_id)
            base_model = session.get(ModelRow, base.model_id) if base else None
            base_ref = f"{base_model.name}@{base.version}" if base and base_model else None
        return ModelVersion(
            name=model.name,
            version=row.version,
            kind=row.kind,
            stage=_stage(row, pointing),
            aliases=pointing,
            artifact=row.artifact,
            base_ref=base_ref,
            endpoint_url=row.endpoint_url,
            upstream_model=row.upstream_model,
            api_key_env=row.api_key_env,
            lineage=dict(row.lineage or {}),
            metrics=dict(row.metrics or {}),
            tags=dict(row.tags or {}),
            description=row.description,
            created_by=row.created_by,
            created_at=row.created_at,
            retired_at=row.retired_at,
            artifact_purged=row.artifact_purged,
            purge_requested=row.purge_requested,
        )

    def resolve(self, ref: str) -> ModelVersion:
        """The version a reference names: `name@3`, `name@production`, or `name` (latest live)."""
        return self._lookup(ref)

    def get(self, name: str) -> Model:
        with self.store.session() as session:
            row = self._owner(session, check_name(name, "model name"))
            return Model(
                row.name,
                row.description,
                dict(row.tags or {}),
                row.created_by,
                row.created_at,
                self._latest(session, row),
                aliases.aliases_of(session, KIND, row.id),
            )

    def list(self) -> builtins.list[Model]:
        with self.store.session() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [
                Model(
                    r.name,
                    r.description,
                    dict(r.tags or {}),
                    r.created_by,
                    r.created_at,
                    self._latest(session, r),
                    aliases.aliases_of(session, KIND, r.id),
                )
                for r in rows
            ]

    def versions(self, name: str) -> builtins.list[ModelVersion]:
        return self._all_versions(name)

    def materialize(self, version: ModelVersion) -> Path:
        """A verified local directory with this version's files, for a worker to load."""
        if version.artifact is None:
            raise InvalidInputError(f"{version.ref} is a remote endpoint; it has no files")
        if version.artifact_purged:
            raise NotFoundError(f"{version.ref} was retired with --purge; its files are gone")
        return self.artifacts.materialize(version.artifact)

    # -- changes ----------------------------------------------------------------------------
    def _get_or_create_model(
        self, session: Session, name: str, description: str, tags: dict[str, Any]
    ) -> ModelRow:
        row, created = owners.find_or_create(
            session, ModelRow, name, description=description, tags=tags, created_by=self.actor
        )
        if created:
            audit.record(
                session, self.actor, "model.create", f"model:{name}", None, {"description": description}
            )
        return row

    def register(
        self,
        name: str,
        path: str | Path | None = None,
        *,
        base: str | None = None,
        endpoint: str | None = None,
        upstream_model: str | None = None,
        api_key_env: str | None = None,
        lineage: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        description: str = "",
        tokenizer_required: bool = True,
    ) -> ModelVersion:
        """Add the next version of `name`: a weights directory, an adapter over `base`, or an endpoint.

        A directory no worker could load is refused (see `sources.check_model_dir`). Files identical
        to a live version of `name` (same base) return that version with `created=False`.
        """
        check_name(name, "model name")
        kind = sources.kind_of(path, base=base, endpoint=endpoint, upstream_model=upstream_model)
        digest, warnings = None, []
        if kind != "endpoint":
            if base is not None:
                self.resolve(base)  # fail on an unknown base before copying any files
            warnings = sources.check_model_dir(Path(str(path)), kind, tokenizer_required=tokenizer_required)
            digest = self.artifacts.put_dir(str(path))
        lineage = dict(lineage or {})
        if path is not None:
            lineage.setdefault("source", str(Path(path).resolve()))
        with self.store.session() as session:
            base_id = None
            if base is not None:
                base_id, base_label = self._base(session, base)
                lineage.setdefault("base", base_label)
            model = self._get_or_create_model(session, name, description, tags or {})
            same = self._same_content(session, model, digest, base_id)
            if same is not None:
                return replace(self._to_version(session, model, same), created=False, warnings=warnings)
            number = self._next_number(session, model)
            row = ModelVersionRow(
                model_id=model.id,
                version=number,
                kind=kind,
                artifact=digest,
                base_version_id=base_id,
                endpoint_url=endpoint,
                upstream_model=upstream_model,
                api_key_env=api_key_env,
                lineage=lineage,
                metrics=metrics or {},
                tags=tags or {},
                description=description,
                created_by=self.actor,
            )
            session.add(row)
            session.flush()
            audit.record(
                session,
                self.actor,
                "version.register",
                f"model:{name}@{number}",
                None,
                {"kind": kind, "artifact": digest, "endpoint": endpoint, "base": lineage.get("base")},
            )
            return replace(self._to_version(session, model, row), warnings=warnings)

    def _base(self, session: Session, base: str) -> tuple[int, str]:
        """The row id and `name@N` of an adapter's base, which must be a full-weights version."""
        ref = parse_ref(base)
        model = self._owner(session, ref.name)
        row = self._version_row(session, model, ref)
        if row.kind != "weights":
            raise InvalidInputError(f"base {base} is an {row.kind} version; an adapter needs full weights")
        return row.id, f"{model.name}@{row.version}"

    def _same_content(
        self, session: Session, model: ModelRow, digest: str | None, base_id: int | None
    ) -> ModelVersionRow | None:
        """A live version of `model` with exactly these files (and base), if there is one."""
        if digest is None:
            return None
        return session.scalar(
            select(ModelVersionRow)
            .where(
                ModelVersionRow.model_id == model.id,
                ModelVersionRow.artifact == digest,
                ModelVersionRow.base_version_id.is_(None)
                if base_id is None
                else ModelVersionRow.base_version_id == base_id,
                ModelVersionRow.lifecycle.is_(None),
            )
            .order_by(ModelVersionRow.version)
            .limit(1)
        )

    def add_metrics(self, ref: str, metrics: dict[str, Any]) -> ModelVersion:
        """Attach evaluation results to a version (new keys only: recorded results never change)."""
        parsed = parse_ref(ref)
        with self.store.session() as session:
            model = self._owner(session, parsed.name, lock=True)
            row = self._version_row(session, model, parsed)
            clash = sorted(set(metrics) & set(row.metrics or {}))
            if clash:
                raise ConflictError(f"{model.name}@{row.version} already has metrics {', '.join(clash)}")
            before = dict(row.metrics or {})
            row.metrics = {**before, **metrics}
            audit.record(
                session,
                self.actor,
                "version.metrics",
                f"model:{model.name}@{row.version}",
                before,
                row.metrics,
            )
            return self._to_version(session, model, row)

    def retire(self, ref: str, *, purge: bool = False) -> ModelVersion:
        """Stop serving a version: `draining` now, `retired` once nothing is in flight."""
        parsed = parse_ref(ref)
        with self.store.session() as session:
            model = self._owner(session, parsed.name, lock=True)
            row = self._version_row(session, model, parsed)
            label = f"{model.name}@{row.version}"
            pointing = [a for a, v in aliases.aliases_of(session, KIND, model.id).items() if v == row.version]
            if pointing:
                raise ConflictError(
                    f"cannot retire {label}: alias {', '.join(sorted(pointing))} points at it",
                    hint=f"move the alias first, e.g. `corral models alias set {model.name} {pointing[0]} VERSION`",
                )
            if row.lifecycle == "retired":
                raise ConflictError(f"{label} is already retired")
            dependants = session.scalar(
                select(func.count()).where(
                    ModelVersionRow.base_version_id == row.id, ModelVersionRow.lifecycle.is_(None)
                )
            )
            if purge and dependants:
                raise ConflictError(
                    f"cannot purge {label}: {dependants} live adapter version(s) use it as their base"
                )
            before = row.lifecycle
            if before != "draining":
                row.lifecycle, row.draining_since = "draining", utcnow()
            row.purge_requested = row.purge_requested or purge
            audit.record(
                session,
                self.actor,
                "version.drain",
                f"model:{label}",
                {"lifecycle": before},
                {"lifecycle": "draining", "purge": row.purge_requested},
            )
        return self.complete_retirement(label)

    def complete_retirement(self, ref: str, *, purge: bool = False) -> ModelVersion:
        """Finish retiring a draining version once no gateway has it in flight; else leave it draining.

        Any process may call this: it reads this process's count (`in_flight`) and every live gateway
        replica's heartbeat. A purge asked for at `retire` is stored and carried out here.
        """
        parsed = parse_ref(ref)
        with self.store.session() as session:
            model = self._owner(session, parsed.name, lock=True)
            row = self._version_row(session, model, parsed)
            label = f"{model.name}@{row.version}"
            since = drain.as_utc(row.draining_since) if row.draining_since else None
            if row.lifecycle == "draining" and drain.drained(
                label, self.in_flight(label), drain.beats(session), since, utcnow()
            ):
                row.lifecycle = "retired"
                row.retired_at = utcnow()
                if (purge or row.purge_requested) and row.artifact and not row.artifact_purged:
                    keep = session.scalars(
                        select(ModelVersionRow.artifact).where(
                            ModelVersionRow.artifact.is_not(None),
                            ModelVersionRow.id != row.id,
                            ModelVersionRow.artifact_purged.is_(False),
                        )
                    ).all()
                    self.artifacts.delete(row.artifact, keep=[k for k in keep if k])
                    row.artifact_purged = True
                audit.record(
                    session,
                    self.actor,
                    "version.retire",
                    f"model:{label}",
                    {"lifecycle": "draining"},
                    {"lifecycle": "retired", "purged": row.artifact_purged},
                )
            return self._to_version(session, model, row)
