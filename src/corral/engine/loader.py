"""Load an HF-format model directory: config.json, safetensors weights, tokenizer, LoRA merge.

Every problem a user can cause (missing directory, bad JSON, unsupported architecture, missing
tensors, an adapter that does not fit its base) is a CorralError naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from corral.engine.models import SUPPORTED_MODEL_TYPES, CausalLM, build_model
from corral.errors import CorralError, InvalidInputError, NotFoundError


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError(
            f"{path.parent} has no {path.name}", hint="is it a Hugging Face-format model directory?"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object")
    return data


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise NotFoundError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise InvalidInputError(f"{path} is a file; give a Hugging Face-format model directory")
    config = _read_json(path / "config.json")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise InvalidInputError(
            f"{path / 'config.json'}: model_type {model_type!r} is not supported by the corral engine",
            hint=f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}; serve others through a vLLM route",
        )
    return config


def load_weights(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InvalidInputError(
            f"{path} has no *.safetensors weights", hint="save the model with safe_serialization=True"
        )
    weights: dict[str, Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise InvalidInputError(f"{file} is not a readable safetensors file: {exc}") from None
    return weights


def merge_lora(weights: dict[str, Tensor], adapter_dir: Path) -> None:
    """Fold a PEFT LoRA adapter into the base weights in place: W += scale * B @ A."""
    from corral.engine.lora import lora_pairs, read_adapter

    cfg, tensors, scale = read_adapter(adapter_dir)
    for module, a, b in lora_pairs(tensors):
        # checkpoints such as the original gpt2 store "h.0..." where PEFT names "transformer.h.0..."
        candidates = [module + ".weight", module.split(".", 1)[-1] + ".weight"]
        target = next((c for c in candidates if c in weights), None)
        if target is None:
            raise InvalidInputError(f"adapter {adapter_dir} targets '{module}', which the base model lacks")
        delta = (b.float() @ a.float()) * scale
        if cfg.get("fan_in_fan_out"):
            delta = delta.t()
        weights[target] = (weights[target].float() + delta).to(weights[target].dtype)


def eos_token_ids(path: Path, config: dict[str, Any], tokenizer: Any) -> list[int]:
    gen = path / "generation_config.json"
    value = (_read_json(gen) if gen.is_file() else {}).get("eos_token_id", config.get("eos_token_id"))
    if value is None and tokenizer is not None:
        value = tokenizer.eos_token_id
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def load_tokenizer(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; all mean "no usable tokenizer"
        raise InvalidInputError(f"cannot load the tokenizer in {path}: {exc}".splitlines()[0]) from None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (or the text given); empty where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    lines = (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags"))
    return set(next(lines, []))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """The CPU has bf16 instructions (AVX-512 BF16 or AMX), per /proc/cpuinfo; False where unreadable.

    oneDNN's own check also says yes on plain AVX-512, where it emulates bf16 with fp32 FMAs.
    """
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags(cpuinfo))


def fast_dtypes(device: str) -> tuple[bool, bool]:
    """(bfloat16, float16) have fast kernels here: oneDNN's on CPUs with AVX-512 BF16/FP16 or AMX."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported(), True
    mkldnn = torch.ops.mkldnn
    bf16 = (
        torch.backends.mkldnn.is_available()
        and bool(mkldnn._is_mkldnn_bf16_supported())
        and cpu_has_native_bf16()
    )
    fp16 = hasattr(mkldnn, "_is_mkldnn_fp16_supported") and bool(mkldnn._is_mkldnn_fp16_supported())
    return bf16, fp16


# Whether `auto` picks bfloat16 on a CPU with bf16 instructions and oneDNN kernels for them. On:
# on the AVX-512 BF16 machine this was measured on, the engine in bf16 decoded 1.35x (2 threads)
# to 1.53x (1 thread) faster than in fp32 at 32 at once (docs/engine.md, "bf16 on this machine").
# Set it False if a CPU turns out slower in bf16: `auto` must never make the default path slower.
CPU_AUTO_BF16 = True


def pick_dtype(device: str, dtype: str, bf16_fast: bool, fp16_fast: bool) -> str:
    """`auto`: bfloat16 on a GPU with it (float16 on older GPUs); float32 on CPUs (see CPU_AUTO_BF16).

    A half precision the device has no kernels for is a start-up error, not a silent crawl.
    """
    if dtype == "auto":
        if device == "cuda":
            return "bfloat16" if bf16_fast else "float16"
        return "bfloat16" if bf16_fast and CPU_AUTO_BF16 else "float32"
    if dtype == "bfloat16" and device == "cuda" and not bf16_fast:
        raise CorralError("engine.dtype is 'bfloat16' but this GPU has no bfloat16 support; use float16")
    if dtype == "float16" and device == "cpu" and not fp16_fast:
        raise CorralError(
            "engine.dtype is 'float16' but this CPU has no float16 kernels (AVX-512 FP16 or AMX)",
            hint="use float32, or bfloat16",
        )
    return dtype


def resolve_device_dtype(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """`auto` device: CUDA when present, else the CPU; `auto` dtype: see `pick_dtype`."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CorralError("engine.device is 'cuda' but no CUDA device is available")
    if dtype == "auto" or dtype in ("bfloat16", "float16"):
        dtype = pick_dtype(device, dtype, *fast_dtypes(device))
    return torch.device(device), getattr(torch, dtype)


@dataclass
class LoadedModel:
    path: Path
    config: dict[str, Any]
    model: CausalLM
    tokenizer: Any  # a transformers tokenizer, or None
    eos_token_ids: list[int]


def load_model(
    path: str | Path,
    device: torch.device,
    dtype: torch.dtype,
    adapter: str | Path | None = None,
    with_tokenizer: bool = True,
) -> LoadedModel:
    """Read and check everything at start-up, so a bad directory fails before a socket opens."""
    path = Path(path)
    config = read_config(path)
    weights = load_weights(path)
    if adapter is not None:
        merge_lora(weights, Path(adapter))
    try:
        model = build_model(config, weights, device, dtype)
    except KeyError as exc:
        raise InvalidInputError(f"{path / 'config.json'} lacks the key {exc}") from None
    tokenizer = load_tokenizer(path) if with_tokenizer else None
    return LoadedModel(path, config, model, tokenizer, eos_token_ids(path, config, tokenizer))
