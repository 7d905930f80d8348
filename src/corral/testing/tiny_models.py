"""A factory for tiny random Hugging Face-format models, built entirely offline.

`make_tiny_model(path, arch="llama")` writes config.json, model.safetensors, a locally trained
byte-level BPE tokenizer and a chat template: a directory that `transformers` and the corral
engine both load, for tests that need a real model without downloading one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corral.data.tokenizer import CHATML_TEMPLATE, train_bpe_tokenizer

ARCHES = ("gpt2", "llama", "qwen2", "mistral")

CHAT_TEMPLATE = CHATML_TEMPLATE

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world! How are you today? I am fine, thank you.",
    "Corral serves language models behind an OpenAI-compatible gateway.",
    "Continuous batching keeps the accelerator busy while requests come and go.",
    "A paged key value cache stores attention state in fixed-size blocks.",
    "Once upon a time there was a small model that answered every question.",
    "def add(a, b):\n    return a + b\n",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000, the numbers go on and on.",
]


def _config(arch: str, vocab_size: int, eos_id: int, bos_id: int, overrides: dict[str, Any]) -> Any:
    import transformers

    common = {"vocab_size": vocab_size, "eos_token_id": eos_id, "bos_token_id": bos_id}
    if arch == "gpt2":
        base = {"n_embd": 64, "n_head": 4, "n_layer": 2, "n_positions": 256}
        return transformers.GPT2Config(**{**common, **base, **overrides})
    base = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 2,
        "max_position_embeddings": 256,
    }
    cls = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "mistral": transformers.MistralConfig,
    }[arch]
    return cls(**{**common, **base, **overrides})


def make_tiny_model(
    path: str | Path, arch: str = "llama", seed: int = 0, vocab_size: int = 384, **config_overrides: Any
) -> Path:
    """Write a tiny random model of `arch` (gpt2, llama, qwen2, mistral) to `path` and return it.

    The same seed gives the same weights. `config_overrides` go to the transformers config
    (e.g. `num_hidden_layers=4`, `tie_word_embeddings=True`).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    import transformers

    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHES)}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_bpe_tokenizer(_CORPUS * 4, out, vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = _config(arch, max(vocab_size, len(tokenizer)), eos_id, bos_id, config_overrides)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # default init is near-zero for biases/norms; random ones test more
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name or ".ln_" in name:
                param.add_(torch.randn_like(param) * 0.1)
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(str(out))
    return out
