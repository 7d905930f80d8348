"""The registry: models with immutable versions and aliases, datasets, prompt templates, audit."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.artifacts import ArtifactStore
from corral.registry.audit import AuditLog
from corral.registry.datasets import DatasetRegistry
from corral.registry.models import ModelRegistry
from corral.registry.prompts import PromptRegistry, render_template
from corral.registry.refs import Ref, parse_ref
from corral.registry.types import (
    AliasEvent,
    AuditEntry,
    DatasetDiff,
    DatasetVersion,
    Model,
    ModelVersion,
    PromptVersion,
)
from corral.store import Store

if TYPE_CHECKING:
    from corral.config import Settings


class Registry:
    """One handle on everything versioned: `models`, `datasets`, `prompts` and the `audit` log."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        actor: str | None = None,
        *,
        in_flight: Callable[[str], int] | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.actor = actor or getpass.getuser()
        self.in_flight = in_flight  # a serving gateway's count of requests per version (None: none here)
        self.models = ModelRegistry(store, artifacts, self.actor, in_flight)
        self.datasets = DatasetRegistry(store, artifacts, self.actor)
        self.prompts = PromptRegistry(store, self.actor)
        self.audit = AuditLog(store)

    def as_actor(self, actor: str) -> Registry:
        """The same registry, recording changes under another name (e.g. an API key's)."""
        return Registry(self.store, self.artifacts, actor, in_flight=self.in_flight)


def open_registry(settings: Settings | None = None, actor: str | None = None) -> Registry:
    """The registry for these settings (default: corral.yaml and CORRAL_* variables)."""
    if settings is None:
        from corral.config import load_settings

        settings = load_settings()
    return Registry(Store.from_settings(settings), ArtifactStore.from_settings(settings), actor)


__all__ = [
    "AliasEvent",
    "AuditEntry",
    "DatasetDiff",
    "DatasetVersion",
    "Model",
    "ModelVersion",
    "PromptVersion",
    "Ref",
    "Registry",
    "open_registry",
    "parse_ref",
    "render_template",
]
