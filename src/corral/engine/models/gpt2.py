"""GPT-2: learned positions, LayerNorm, fused QKV (stored as Conv1D, i.e. transposed), GELU MLP."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache, paged_attention
from corral.engine.models.weights import WeightSource


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
        self.lm_head = w.optional("lm_head.weight")
        if self.lm_head is None or config.get("tie_word_embeddings", True):
            self.lm_head = self.wte
        self.ln_f = (w.get("ln_f.weight"), w.get("ln_f.bias"))
        self.layers = [self._layer(w, i) for i in range(self.num_layers)]

    @staticmethod
    def _layer(w: WeightSource, i: int) -> dict[str, Tensor]:
        p = f"h.{i}."
        return {
            "ln1_w": w.get(p + "ln_1.weight"),
            "ln1_b": w.get(p + "ln_1.bias"),
            "qkv": w.get(p + "attn.c_attn.weight", transpose=True),
            "qkv_b": w.get(p + "attn.c_attn.bias"),
            "o": w.get(p + "attn.c_proj.weight", transpose=True),
            "o_b": w.get(p + "attn.c_proj.bias"),
            "ln2_w": w.get(p + "ln_2.weight"),
            "ln2_b": w.get(p + "ln_2.bias"),
            "fc": w.get(p + "mlp.c_fc.weight", transpose=True),
            "fc_b": w.get(p + "mlp.c_fc.bias"),
            "proj": w.get(p + "mlp.c_proj.weight", transpose=True),
            "proj_b": w.get(p + "mlp.c_proj.bias"),
        }

    def forward(
        self, input_ids: Tensor, positions: Tensor, cache: KVCache, meta: AttentionMetadata
    ) -> Tensor:
        h = F.embedding(input_ids, self.wte) + F.embedding(positions, self.wpe)
        n, size = input_ids.shape[0], (self.hidden,)
        for i, layer in enumerate(self.layers):
            x = F.layer_norm(h, size, layer["ln1_w"], layer["ln1_b"], self.eps)
            q, k, v = (
                F.linear(x, layer["qkv"], layer["qkv_b"]).view(n, 3, self.num_heads, self.head_dim).unbind(1)
            )
            a = paged_attention(q, k, v, cache, i, meta, self.scales[i])
            h = h + F.linear(a.view(n, self.hidden), layer["o"], layer["o_b"])
            x = F.layer_norm(h, size, layer["ln2_w"], layer["ln2_b"], self.eps)
            x = F.gelu(F.linear(x, layer["fc"], layer["fc_b"]), approximate="tanh")
            h = h + F.linear(x, layer["proj"], layer["proj_b"])
        return F.layer_norm(h, size, self.ln_f[0], self.ln_f[1], self.eps)

    def logits(self, hidden: Tensor) -> Tensor:
        assert self.lm_head is not None
        return F.linear(hidden, self.lm_head)
