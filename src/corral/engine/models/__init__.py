"""Our own forward passes, one module per model family, all attending over the paged KV cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache

if TYPE_CHECKING:
    from corral.engine.lora import LoraBatch
    from corral.engine.models.ops import Linear


class CausalLM(Protocol):
    """What the model runner needs from a model family."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_model_len: int
    vocab_size: int

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        meta: AttentionMetadata,
        lora: LoraBatch | None = None,
    ) -> Tensor:
        """Final hidden states, [tokens, hidden]; `lora` adds each row's adapter (corral.engine.lora)."""
        ...

    def lora_target(self, module: str) -> tuple[Linear, int] | None:
        """The linear layer a PEFT module name maps to and its output offset there, or None."""
        ...

    def logits(self, hidden: Tensor) -> Tensor: ...


def build_model(
    config: dict[str, Any], weights: dict[str, Tensor], device: torch.device, dtype: torch.dtype
) -> CausalLM:
    """The model for an HF `config.json` (already checked to be a supported `model_type`)."""
    if config["model_type"] == "gpt2":
        from corral.engine.models.gpt2 import GPT2

        return GPT2(config, weights, device, dtype)
    from corral.engine.models.llama import Llama

    return Llama(config, weights, device, dtype)


SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "qwen2", "mistral")
