"""GPT-2: learned positions, LayerNorm, fused QKV (stored as Conv1D, i.e. transposed), GELU MLP."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache, paged_attention
from corral.engine.lora import LoraBatch
from corral.engine.models.ops import Linear
from corral.engine.models.weights import WeightSource


@dataclass
class GPT2Layer:
    ln1: tuple[Tensor, Tensor]  # LayerNorm weight, bias
    qkv: Linear
    o: Linear
    ln2: tuple[Tensor, Tensor]
    fc: Linear
    proj: Linear


class GPT2:
    def __init__(
        self, config: dict[str, Any], weights: dict[str, Tensor], device: torch.device, dtype: torch.dtype
    ) -> None:
        self.hidden = config["n_embd"]
        self.num_heads = config["n_head"]
        self.num_kv_heads = self.num_heads
        self.head_dim = self.hidden // self.num_heads
        self.num_layers = config["n_layer"]
        self.vocab_size = config["vocab_size"]
        self.max_model_len = config.get("n_positions", 1024)
        self.eps = config.get("layer_norm_epsilon", 1e-5)
        scale = self.head_dim**-0.5 if config.get("scale_attn_weights", True) else 1.0
        by_layer = config.get("scale_attn_by_inverse_layer_idx", False)
        self.scales = [scale / (i + 1) if by_layer else scale for i in range(self.num_layers)]
        w = WeightSource(weights, device, dtype, strip=("transformer.",))
        self.wte = w.get("wte.weight")
        self.wpe = w.get("wpe.weight")
        lm_head = w.optional("lm_head.weight")
        if lm_head is None or config.get("tie_word_embeddings", True):
            lm_head = self.wte
        self.lm_head = Linear(lm_head)
        self.ln_f = (w.get("ln_f.weight"), w.get("ln_f.bias"))
        self.layers = [self._layer(w, i) for i in range(self.num_layers)]

    @staticmethod
    def _layer(w: WeightSource, i: int) -> GPT2Layer:
        p = f"h.{i}."

        def linear(name: str) -> Linear:  # GPT-2 stores these as Conv1D: [in, out]
            return Linear(w.get(p + name + ".weight", transpose=True), w.get(p + name + ".bias"))

        return GPT2Layer(
            ln1=(w.get(p + "ln_1.weight"), w.get(p + "ln_1.bias")),
            qkv=linear("attn.c_attn"),
            o=linear("attn.c_proj"),
            ln2=(w.get(p + "ln_2.weight"), w.get(p + "ln_2.bias")),
            fc=linear("mlp.c_fc"),
            proj=linear("mlp.c_proj"),
        )

    def lora_target(self, module: str) -> tuple[Linear, int] | None:
        """The linear layer a PEFT module name (`transformer.h.0.attn.c_attn`) maps to, at offset 0."""
        m = re.search(r"h\.(\d+)\.(attn|mlp)\.(c_attn|c_proj|c_fc)$", module)
        if m is None or int(m.group(1)) >= self.num_layers:
            return None
        layer = self.layers[int(m.group(1))]
        slots = {
            "attn.c_attn": layer.qkv,
            "attn.c_proj": layer.o,
            "mlp.c_fc": layer.fc,
            "mlp.c_proj": layer.proj,
        }
        found = slots.get(f"{m.group(2)}.{m.group(3)}")
        return None if found is None else (found, 0)

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        meta: AttentionMetadata,
        lora: LoraBatch | None = None,
    ) -> Tensor:
        h = F.embedding(input_ids, self.wte) + F.embedding(positions, self.wpe)
        n, size = input_ids.shape[0], (self.hidden,)
        for i, layer in enumerate(self.layers):
            x = F.layer_norm(h, size, *layer.ln1, self.eps)
            q, k, v = layer.qkv(x, lora).view(n, 3, self.num_heads, self.head_dim).unbind(1)
            a = paged_attention(q, k, v, cache, i, meta, self.scales[i])
            h = h + layer.o(a.view(n, self.hidden), lora)
            x = F.layer_norm(h, size, *layer.ln2, self.eps)
            h = h + layer.proj(layer.fc.gelu(x, lora), lora)
        return F.layer_norm(h, size, *self.ln_f, self.eps)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden)
