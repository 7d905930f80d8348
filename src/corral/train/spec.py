"""The training spec: one YAML file per run, separate from corral.yaml, every field checked before anything loads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.config.yamlfile import parse_yaml
from corral.errors import ConfigError, CorralError, NotFoundError
from corral.registry.refs import check_alias, check_name, parse_ref


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSpec(_Strict):
    r: int = Field(default=8, ge=1, le=1024, description="adapter rank")
    alpha: int = Field(default=16, gt=0, description="scale numerator: the update is scaled by alpha / r")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the adapter input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="names of the linear layers that get adapters",
    )


class TrainSpec(_Strict):
    """Everything one fine-tuning run needs. Steps count optimizer updates."""

    output: str = Field(description="model name the result is registered under, as its next version")
    base: str = Field(description="base model: a registry reference (NAME@N, NAME@production) or a directory")
    dataset: str = Field(description="dataset version to train on (NAME@N); uses its train/validation splits")
    method: Literal["lora", "full"] = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)

    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; default: from epochs")
    epochs: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=8, ge=1, description="rows per micro-batch on each process")
    grad_accum: int = Field(default=1, ge=1, description="micro-batches per optimizer step")
    max_seq_len: int = Field(default=512, ge=8)

    lr: float = Field(default=2e-4, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine floor, as a fraction of lr")
    warmup_steps: int = Field(default=10, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    max_grad_norm: float | None = Field(
        default=1.0, gt=0, description="clip gradients to this norm; null: off"
    )
    dropout: float | None = Field(default=None, ge=0, lt=1, description="override the model's dropout")
    grad_checkpointing: bool = False
    bf16: bool = Field(default=True, description="bf16 autocast when on a GPU (CPU always runs fp32)")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)

    eval_every: int = Field(default=50, ge=1, description="validation loss every N steps (and at the end)")
    eval_rows: int | None = Field(default=None, ge=1, description="at most this many validation rows")
    checkpoint_every: int = Field(
        default=50, ge=1, description="checkpoint to the artifact store every N steps"
    )

    alias: str | None = Field(default=None, description="alias to point at the new version, e.g. staging")
    tags: dict[str, Any] = Field(default_factory=dict)
    description: str = ""

    # Names and references are checked here, before anything loads, not when the result is
    # registered after the run: a run must not train for an hour and then fail on its output name.
    @field_validator("output")
    @classmethod
    def _output_name(cls, value: str) -> str:
        return _checked(check_name, value, "model name")

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        return None if value is None else _checked(check_alias, value)

    @field_validator("dataset")
    @classmethod
    def _dataset_ref(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty dataset: give a dataset version, NAME@N")
        ref = _checked(parse_ref, value)
        if ref.alias is not None:
            raise ValueError(f"datasets have no aliases; write {ref.name}@N or {ref.name}")
        return value

    @field_validator("base")
    @classmethod
    def _base_ref(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty base: give a registry reference (NAME@N) or a model directory")
        if not (value.startswith((".", "/", "~")) or "/" in value or Path(value).expanduser().is_dir()):
            _checked(parse_ref, value)
        return value

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"AdamW betas must each be in [0, 1), got {list(value)}")
        return value

    def digest(self) -> str:
        """Identifies the run: the same spec resumes the same run's checkpoints."""
        body = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(body).hexdigest()[:16]


def _checked(check: Any, value: str, *args: str) -> Any:
    """Run a registry name check, turning its error into a validation error for that field."""
    try:
        return check(value, *args)
    except CorralError as exc:
        raise ValueError(str(exc)) from None


def _location(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def parse_spec(data: Any, source: str = "training spec") -> TrainSpec:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown key '{_location(error)}'")
            elif error["type"] == "missing":
                problems.append(f"missing key '{_location(error)}'")
            else:
                message = error["msg"].removeprefix("Value error, ")
                problems.append(f"'{_location(error)}': {message}")
        unknown = any(e["type"] == "extra_forbidden" for e in exc.errors())
        hint = f"known keys: {', '.join(sorted(TrainSpec.model_fields))}" if unknown else None
        raise ConfigError(f"{source}: " + "; ".join(problems), hint=hint) from None


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainSpec:
    """Read and check a training spec YAML file; `overrides` replace top-level keys."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"training spec {path} does not exist")
    data = parse_yaml(path.read_text(encoding="utf-8"), path) or {}
    if isinstance(data, dict) and overrides:
        data = {**data, **overrides}
    return parse_spec(data, str(path))
