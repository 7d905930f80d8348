"""What a model version is made of: checks on a weights or adapter directory, or an endpoint."""

from __future__ import annotations

from pathlib import Path

from corral.errors import InvalidInputError, NotFoundError


def kind_of(
    path: str | Path | None, *, base: str | None, endpoint: str | None, upstream_model: str | None
) -> str:
    """`weights`, `adapter` or `endpoint`, from what `register` was given; bad combinations are errors."""
    if endpoint is not None:
        if path is not None or base is not None:
            raise InvalidInputError("give either a PATH or --endpoint, not both")
        if not endpoint.startswith(("http://", "https://")):
            raise InvalidInputError(f"endpoint '{endpoint}' must start with http:// or https://")
        if not upstream_model:
            raise InvalidInputError("an endpoint version needs --upstream-model (the model name upstream)")
        return "endpoint"
    if path is None:
        raise InvalidInputError("give a model directory PATH, or --endpoint URL --upstream-model M")
    return "adapter" if base else "weights"


def check_model_dir(path: Path, kind: str) -> None:
    if not path.exists():
        raise NotFoundError(f"path {path} does not exist")
    if not path.is_dir():
        raise InvalidInputError(f"{path} is a file; a model version is a directory in Hugging Face format")
    needed = "adapter_config.json" if kind == "adapter" else "config.json"
    if not (path / needed).is_file():
        what = "a LoRA adapter (PEFT format)" if kind == "adapter" else "a Hugging Face-format model"
        raise InvalidInputError(f"{path} has no {needed}, so it is not {what}")
