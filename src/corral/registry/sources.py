"""What a model version is made of: checks on a weights or adapter directory, or an endpoint."""

from __future__ import annotations

import json
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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
TOKENIZER_SETS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"), ("vocab.txt",))


def check_model_dir(path: Path, kind: str, *, tokenizer_required: bool = True) -> list[str]:
    """Refuse a directory no worker could load; return warnings for what is allowed but odd.

    Weights: config.json parses, some weights file is there, a tokenizer loads (unless
    `tokenizer_required` is False: then its absence is a warning). Adapters: adapter_config.json
    parses and adapter weights are there; the tokenizer comes from the base.
    """
    if not path.exists():
        raise NotFoundError(f"path {path} does not exist")
    if not path.is_dir():
        raise InvalidInputError(f"{path} is a file; a model version is a directory in Hugging Face format")
    needed = "adapter_config.json" if kind == "adapter" else "config.json"
    what = "a LoRA adapter (PEFT format)" if kind == "adapter" else "a Hugging Face-format model"
    if not (path / needed).is_file():
        raise InvalidInputError(f"{path} has no {needed}, so it is not {what}")
    _json_object(path / needed)
    prefix = "adapter_model" if kind == "adapter" else ""
    if not any(
        f.is_file() and f.name.startswith(prefix) and f.suffix in WEIGHT_SUFFIXES for f in path.iterdir()
    ):
        raise InvalidInputError(
            f"{path} has no weights ({prefix or '*'}{'|'.join(WEIGHT_SUFFIXES)}), so it is not {what}"
        )
    if kind == "adapter":
        return []
    problem = _tokenizer_problem(path)
    if problem is None:
        return []
    if tokenizer_required:
        raise InvalidInputError(
            f"{path} {problem}; a worker cannot serve it",
            hint="add the tokenizer files (tokenizer.json or tokenizer.model), or pass --no-tokenizer "
            "to register it anyway",
        )
    return [f"{path} {problem}: registered anyway (--no-tokenizer); a worker will not start without one"]


def _json_object(file: Path) -> dict[str, object]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{file} must hold a JSON object")
    return data


def _tokenizer_problem(path: Path) -> str | None:
    """None when the directory has a tokenizer that loads; else what is wrong with it."""
    found = next((names for names in TOKENIZER_SETS if all((path / n).is_file() for n in names)), None)
    if found is None:
        return "has no tokenizer (tokenizer.json, tokenizer.model, vocab.json with merges.txt, or vocab.txt)"
    if found != ("tokenizer.json",):
        return None
    try:
        text = (path / "tokenizer.json").read_text(encoding="utf-8")
        json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"has a tokenizer.json that is not valid JSON ({exc})"
    try:
        from tokenizers import Tokenizer
    except ImportError:  # the registry tier installs without it; the JSON parsed, which is what we can check
        return None
    try:
        Tokenizer.from_str(text)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return f"has a tokenizer.json that does not load ({str(exc).splitlines()[0][:200]})"
    return None
