"""The Llama family (Llama, Qwen2, Mistral configs): RMSNorm, rotary positions, GQA, SwiGLU."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from corral.engine.attention import AttentionMetadata, KVCache, paged_attention
from corral.engine.lora import LoraBatch
from corral.engine.models.ops import Linear
from corral.engine.models.weights import WeightSource
from corral.errors import InvalidInputError

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """As HF computes it: normalize in fp32, then scale in the model's dtype (fp32: torch's fused
    kernel, the same values in one op instead of seven)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """Rotary settings from either the transformers 5 `rope_parameters` or the older top-level keys."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def inverse_frequencies(config: dict[str, Any], head_dim: int) -> tuple[Tensor, float]:
    """The rotary inverse frequencies and position scale for the supported rope types."""
    params = rope_parameters(config)
    base = float(params["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = params["rope_type"]
    if kind == "default":
        return inv_freq, 1.0
    if kind == "linear":
        return inv_freq, 1.0 / float(params["factor"])
    if kind == "llama3":
        factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
        old_len = params["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        return torch.where(medium, smoothed, scaled), 1.0
    raise InvalidInputError(f"rope type '{kind}' is not supported", hint="supported: default, linear, llama3")


def rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """HF's `x * cos + rotate_half(x) * sin` with the sign of rotate_half folded into `signed_sin`
    (its first half negated): the same values, in four ops instead of seven."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


@dataclass
class LlamaLayer:
    ln1: Tensor  # RMSNorm weights
    ln2: Tensor
    qkv: Linear
    o: Linear
    gate_up: Linear
    down: Linear


class Llama:
    def __init__(
        self, config: dict[str, Any], weights: dict[str, Tensor], device: torch.device, dtype: torch.dtype
    ) -> None:
        self.hidden = config["hidden_size"]
        self.num_heads = config["num_attention_heads"]
        self.num_kv_heads = config.get("num_key_value_heads") or self.num_heads
        self.head_dim = config.get("head_dim") or self.hidden // self.num_heads
        self.num_layers = config["num_hidden_layers"]
        self.vocab_size = config["vocab_size"]
        self.eps = config.get("rms_norm_eps", 1e-6)
        self.act = ACTIVATIONS[config.get("hidden_act", "silu")]
        self.max_model_len = config.get("max_position_embeddings", 2048)
        window = config.get("sliding_window")
        if window and config.get("use_sliding_window", True):
            self.max_model_len = min(self.max_model_len, window)  # no windowed attention: cap instead
        self.scale = self.head_dim**-0.5
        w = WeightSource(weights, device, dtype, strip=("model.",))
        self.embed = w.get("embed_tokens.weight")
        self.lm_head = Linear(self.embed if config.get("tie_word_embeddings") else w.get("lm_head.weight"))
        self.norm = w.get("norm.weight")
        self.layers = [self._layer(w, i) for i in range(self.num_layers)]
        inv_freq, pos_scale = inverse_frequencies(config, self.head_dim)
        pos = torch.arange(self.max_model_len, dtype=torch.int64).float() * pos_scale
        freqs = torch.outer(pos, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(device=device, dtype=dtype)
        sin = emb.sin()
        half = self.head_dim // 2
        self.signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1).to(device=device, dtype=dtype)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim

    def _layer(self, w: WeightSource, i: int) -> LlamaLayer:
        p = f"layers.{i}."
        attn, mlp = p + "self_attn.", p + "mlp."
        return LlamaLayer(
            ln1=w.get(p + "input_layernorm.weight"),
            ln2=w.get(p + "post_attention_layernorm.weight"),
            qkv=Linear(
                w.cat([attn + "q_proj.weight", attn + "k_proj.weight", attn + "v_proj.weight"]),
                w.cat_optional([attn + "q_proj.bias", attn + "k_proj.bias", attn + "v_proj.bias"]),
            ),
            o=Linear(w.get(attn + "o_proj.weight"), w.optional(attn + "o_proj.bias")),
            gate_up=Linear(
                w.cat([mlp + "gate_proj.weight", mlp + "up_proj.weight"]),
                w.cat_optional([mlp + "gate_proj.bias", mlp + "up_proj.bias"]),
            ),
            down=Linear(w.get(mlp + "down_proj.weight"), w.optional(mlp + "down_proj.bias")),
        )

    def lora_target(self, module: str) -> tuple[Linear, int] | None:
        """The (fused) linear layer a PEFT module name maps to, and its output offset there."""
        m = re.search(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$", module)
        if m is None or int(m.group(1)) >= self.num_layers:
            return None
        layer, name = self.layers[int(m.group(1))], m.group(2)
        inter = layer.gate_up.out_features // 2
        slots = {
            "q_proj": (layer.qkv, 0),
            "k_proj": (layer.qkv, self.q_size),
            "v_proj": (layer.qkv, self.q_size + self.kv_size),
            "o_proj": (layer.o, 0),
            "gate_proj": (layer.gate_up, 0),
            "up_proj": (layer.gate_up, inter),
            "down_proj": (layer.down, 0),
        }
        return slots.get(name)

    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        meta: AttentionMetadata,
        lora: LoraBatch | None = None,
    ) -> Tensor:
        h = F.embedding(input_ids, self.embed)
        cos, sin = self.cos[positions].unsqueeze(1), self.signed_sin[positions].unsqueeze(1)
        heads = self.num_heads + self.num_kv_heads
        n = input_ids.shape[0]
        for i, layer in enumerate(self.layers):
            x = rms_norm(h, layer.ln1, self.eps)
            qkv = layer.qkv(x, lora)
            # q and k rotated together: one set of ops for both
            qk = rotate(qkv[:, : self.q_size + self.kv_size].view(n, heads, self.head_dim), cos, sin)
            q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
            v = qkv[:, self.q_size + self.kv_size :].view(n, self.num_kv_heads, self.head_dim)
            a = paged_attention(q, k, v, cache, i, meta, self.scale)
            h = h + layer.o(a.view(n, self.q_size), lora)
            x = rms_norm(h, layer.ln2, self.eps)
            gate, up = layer.gate_up(x, lora).chunk(2, dim=-1)
            h = h + layer.down(self.act(gate) * up, lora)
        return rms_norm(h, self.norm, self.eps)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden)
