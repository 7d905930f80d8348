"""The model side of a run: find the base, load it with its tokenizer, add LoRA adapters, save the result."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from corral.errors import InvalidInputError, NotFoundError
from corral.train.examples import DEFAULT_CHAT_TEMPLATE
from corral.train.spec import LoraSpec, TrainSpec

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

# Config attributes that hold a dropout probability, across the architectures transformers ships.
DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout")


@dataclass
class Base:
    path: Path
    ref: str | None  # the registry reference, or None for a plain directory


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or os.sep in text


def find_base(spec: TrainSpec, registry: Any) -> Base:
    """The base model's local directory: a registered version (materialized) or a given directory."""
    if _looks_like_path(spec.base) or Path(spec.base).is_dir():
        path = Path(spec.base).expanduser()
        if not (path / "config.json").is_file():
            raise NotFoundError(f"base model directory {path} does not exist or has no config.json")
        if spec.method == "lora":
            raise InvalidInputError(
                "a LoRA run needs a registered base model, since the adapter is registered over it",
                hint=f"register it first: corral models register NAME {path}",
            )
        return Base(path, None)
    version = registry.models.resolve(spec.base)
    if version.kind != "weights":
        raise InvalidInputError(
            f"base {version.ref} is an {version.kind} version; training needs full weights"
        )
    return Base(registry.models.materialize(version), version.ref)


# Config attributes that hold the context length (positions the model was trained for).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def context_length(config: Any) -> int | None:
    """How many positions the model takes, from its config; None when the config does not say."""
    for key in CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def sequence_length(spec: TrainSpec, context: int | None) -> int:
    """The longest row a run trains on: `max_seq_len`, refused when set beyond the model's context;
    the default is cut to the context of a smaller model."""
    if context is None or spec.max_seq_len <= context:
        return spec.max_seq_len
    if "max_seq_len" in spec.model_fields_set:
        raise InvalidInputError(
            f"max_seq_len {spec.max_seq_len} is longer than the context of base {spec.base} ({context} tokens)",
            hint=f"set max_seq_len to {context} or less",
        )
    return context


def load_model(path: Path, spec: TrainSpec) -> tuple[Any, Any]:
    """The base model in fp32 and its tokenizer (given a chat template and pad token if it lacks them)."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:  # no weights, no tokenizer, or not a causal LM: transformers says so in its own words
        config = transformers.AutoConfig.from_pretrained(path)
        sequence_length(spec, context_length(config))  # before the weights load
        if spec.dropout is not None:
            for key in DROPOUT_KEYS:
                if hasattr(config, key):
                    setattr(config, key, spec.dropout)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(
            f"cannot load base model {spec.base}: {reason}",
            hint="a base needs a Hugging Face causal LM: config.json, weights and a tokenizer",
        ) from None
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.grad_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5 name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model, tokenizer


def linear_layer_names(model: torch.nn.Module) -> set[str]:
    """Names of the layers LoRA can adapt: linear ones, and GPT-2's Conv1D (a transposed linear)."""
    from transformers.pytorch_utils import Conv1D

    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear | Conv1D)
    }


def add_lora(model: Any, lora: LoraSpec) -> Any:
    """Wrap the model with LoRA adapters on `lora.target_modules`; every other weight is frozen."""
    from peft import LoraConfig, get_peft_model

    available = linear_layer_names(model)
    missing = sorted(set(lora.target_modules) - available)
    if missing:
        raise InvalidInputError(
            f"LoRA target modules {', '.join(missing)} do not exist in this {model.config.model_type} model",
            hint=f"its linear layers are: {', '.join(sorted(available))}",
        )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def save_model(model: Any, tokenizer: Any, path: Path) -> None:
    """Hugging Face format: full weights (config.json) or a PEFT adapter (adapter_config.json),
    with the tokenizer and its chat template either way."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
