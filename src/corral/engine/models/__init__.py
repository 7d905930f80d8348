"""Our own forward passes, one module per model family, all attending over the paged KV cache."""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache


class CausalLM(Protocol):
    """What the model runner needs from a model family."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    max_model_len: int
    vocab_size: int

    def forward(
        self, input_ids: Tensor, positions: Tensor, cache: KVCache, meta: AttentionMetadata
    ) -> Tensor:
        """Final hidden states, [tokens, hidden]."""
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
