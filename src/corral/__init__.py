"""corral: serve, trace, version, evaluate and fine-tune language models, and close the loop.

import corral
registry = corral.open_registry()
registry.models.register("support", "./my-model")
registry.models.set_alias("support", "production", 1)
"""

from __future__ import annotations

from typing import Any

from corral.artifacts import ArtifactStore
from corral.config import Settings, load_settings
from corral.errors import (
    ArtifactIntegrityError,
    ConfigError,
    ConflictError,
    CorralError,
    InvalidInputError,
    NotFoundError,
    StoreUnavailableError,
)
from corral.registry import (
    AliasEvent,
    AuditEntry,
    DatasetVersion,
    Model,
    ModelVersion,
    PromptVersion,
    Registry,
    open_registry,
    parse_ref,
)
from corral.store import Store

__version__ = "0.1.0"

# Entry points of the stages that need optional extras (torch, ...): imported on first use.
_LAZY = {
    "LLMEngine": "corral.engine",
    "SamplingParams": "corral.engine",
    "train": "corral.train",
    "TrainSpec": "corral.train",
    "create_gateway": "corral.gateway",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'corral' has no attribute '{name}'")
    import importlib

    return getattr(importlib.import_module(module_name), name)


__all__ = [
    "AliasEvent",
    "ArtifactIntegrityError",
    "ArtifactStore",
    "AuditEntry",
    "ConfigError",
    "ConflictError",
    "CorralError",
    "DatasetVersion",
    "InvalidInputError",
    "Model",
    "ModelVersion",
    "NotFoundError",
    "PromptVersion",
    "Registry",
    "Settings",
    "Store",
    "StoreUnavailableError",
    "load_settings",
    "open_registry",
    "parse_ref",
]
