"""The refresh pipeline file: every key checked when it is loaded, errors naming the file and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from corral.config.yamlfile import parse_yaml
from corral.errors import ConfigError, CorralError, NotFoundError
from corral.pipeline.cron import parse_cron
from corral.registry.refs import check_name

STAGES = ("collect", "dataset", "train", "evaluate", "register", "canary", "promote", "retire")
WINDOW = re.compile(r"^\d+[mhdw]$")
TRAIN_OWN = ("output", "base", "dataset", "alias")  # the pipeline fills these in


def _name(value: str, what: str) -> str:
    try:
        return check_name(value, what)
    except CorralError as exc:
        raise ValueError(str(exc)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectSpec(_Strict):
    """Which traces the refresh learns from: the deployment's window, the badly rated and a sample of good."""

    window: str = Field(default="7d", description="how far back: 30m, 24h, 7d, 2w")
    below: float = Field(default=0.5, ge=0, le=1, description="feedback under this is bad")
    good_sample: int = Field(default=50, ge=0, description="at most this many well-rated traces kept too")
    use_corrections: bool = Field(default=True, description="train on feedback corrections")
    min_rows: int = Field(default=1, ge=1, description="fewer collected rows than this fail the run")
    limit: int | None = Field(default=None, ge=1, description="at most this many traces read (newest first)")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if not WINDOW.match(value.strip().lower()):
            raise ValueError(f"'{value}' is not a span such as 30m, 24h, 7d or 2w")
        return value.strip().lower()


class DatasetSpec(_Strict):
    name: str = Field(description="dataset the collected rows are registered under, as its next version")
    replay: float = Field(
        default=0.5, ge=0, lt=1, description="share of rows from the previous training data"
    )
    replay_from: str | None = Field(
        default=None, description="dataset version to replay (default: the production version's dataset)"
    )
    redact: bool = True
    split: str = Field(default="80/10/10", description="train/validation/test percents of collected rows")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _name(value, "dataset name")

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or sum(int(p) for p in parts) != 100:
            raise ValueError(f"'{value}' must be three whole percents adding up to 100, like 80/10/10")
        return value


class TrainStageSpec(_Strict):
    """The training spec (corral train's keys, less output, base and dataset) and how many processes."""

    model_config = ConfigDict(extra="allow")
    nproc: int = Field(default=1, ge=1, le=64, description="processes; more than 1 runs under torchrun")
    method: Literal["lora", "full"] = "lora"

    def spec_keys(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump().items() if k != "nproc"}


class EvaluateSpec(_Strict):
    gates: list[str] = Field(min_length=1, description="gate files (relative to the pipeline file)")
    limit: int | None = Field(default=None, ge=1, description="at most this many items per gate")
    max_tokens: int = Field(default=64, ge=1)


class RetireSpec(_Strict):
    drain_timeout_s: float = Field(default=120.0, ge=0, description="how long to wait for in-flight requests")
    purge: bool = Field(default=False, description="also delete the old version's weights")


class TriggerSpec(_Strict):
    alerts: list[str] = Field(default_factory=list, description="alert rule names that start a run")


class PipelineSpec(_Strict):
    name: str
    model: str = Field(description="the model refreshed; its production alias is the baseline")
    deployment: str = Field(description="the deployment whose traffic is collected and canaried")
    schedule: str | None = Field(default=None, description="cron: minute hour day month weekday")
    triggers: TriggerSpec = Field(default_factory=TriggerSpec)
    collect: CollectSpec = Field(default_factory=CollectSpec)
    dataset: DatasetSpec
    train: TrainStageSpec = Field(default_factory=TrainStageSpec)
    evaluate: EvaluateSpec
    canary: dict[str, Any] = Field(default_factory=dict, description="the canary controller's settings")
    retire: RetireSpec = Field(default_factory=RetireSpec)

    @field_validator("name", "model")
    @classmethod
    def _names(cls, value: str) -> str:
        return _name(value, "name")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_cron(value)
            except CorralError as exc:
                raise ValueError(exc.message) from None
        return value


def validation_problems(exc: ValidationError) -> list[str]:
    """One phrase per problem, naming the dotted key: unknown, missing, or what is wrong with it."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        elif error["type"] == "missing":
            problems.append(f"missing key '{where}'")
        else:
            problems.append(f"'{where}': {error['msg'].removeprefix('Value error, ')}")
    return problems


def parse_pipeline(data: Any, source: str = "pipeline", *, check_train: bool = True) -> PipelineSpec:
    """Check a pipeline mapping completely; `check_train` also checks the train keys (needs the train extra)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pipeline file is a mapping (name, model, deployment, dataset, ...)")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        unknown = any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in exc.errors())
        hint = f"known keys: {', '.join(PipelineSpec.model_fields)}" if unknown else None
        raise ConfigError(f"{source}: " + "; ".join(validation_problems(exc)), hint=hint) from None
    owned = sorted(set(spec.train.spec_keys()) & set(TRAIN_OWN))
    if owned:
        raise ConfigError(f"{source}: 'train.{owned[0]}' is set by the pipeline; remove it")
    if check_train:
        _check_train(spec, source)
    _check_canary(spec, source)
    return spec


def _check_train(spec: PipelineSpec, source: str) -> None:
    try:
        from corral.train.spec import TrainSpec
    except ImportError:  # the train extra is missing: the train stage itself will say so
        return
    keys = {**spec.train.spec_keys(), "output": spec.model, "base": f"{spec.model}@1", "dataset": "x@1"}
    try:
        TrainSpec.model_validate(keys)
    except ValidationError as exc:
        problems = [p.replace("'", "'train.", 1) for p in validation_problems(exc)]
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def _check_canary(spec: PipelineSpec, source: str) -> None:
    try:
        from corral.pipeline.canary import CanarySpec
    except ImportError:  # the canary controller is not installed in this build
        return
    try:
        CanarySpec.from_mapping(spec.canary)
    except (CorralError, ValueError, TypeError) as exc:
        message = exc.message if isinstance(exc, CorralError) else str(exc)
        raise ConfigError(f"{source}: 'canary': {message}") from None


def load_pipeline(path: str | Path, *, check_train: bool = True) -> PipelineSpec:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"pipeline file {path} does not exist")
    data = parse_yaml(path.read_text(encoding="utf-8"), path)
    return parse_pipeline(data, str(path), check_train=check_train)


def gate_paths(spec: PipelineSpec, file: str | Path) -> list[Path]:
    """The gate files, relative to the pipeline file's directory."""
    base = Path(file).resolve().parent
    return [(base / gate).resolve() for gate in spec.evaluate.gates]
