"""The starter model: a small Llama trained by `corral train` on the generated support-desk corpus.

The weights ship in the package (`corral/data/starter/model/`); `ensure_starter_model` registers them
as `starter@1` with `production` pointing at it. `build_starter_model` retrains them from scratch
(tokenizer, random init, `train`) for `scripts/make_starter_model.py`, or when the files are missing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

from rich.console import Console

from corral.data.loaders import load_file
from corral.data.tokenizer import train_bpe_tokenizer
from corral.errors import NotFoundError
from corral.registry import ModelVersion, Registry

STARTER_DIR = Path(str(files("corral.data") / "starter"))
MODEL_DIR = STARTER_DIR / "model"
TOKENIZER_DIR = STARTER_DIR / "tokenizer"
KNOWN_FILE = STARTER_DIR / "support_known.jsonl"
NEW_FILE = STARTER_DIR / "support_new.jsonl"
MODEL_NAME, DATASET_NAME, NEW_DATASET_NAME = "starter", "support", "support-new"

ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}
# The spec `corral train` runs; `base` and `dataset` are filled in by build_starter_model.
TRAIN_SPEC: dict[str, Any] = {
    "output": MODEL_NAME,
    "method": "full",
    "max_steps": 500,
    "batch_size": 32,
    "lr": 3e-3,
    "warmup_steps": 25,
    "min_lr_ratio": 0.05,
    "weight_decay": 0.01,
    "max_seq_len": 128,
    "eval_every": 100,
    "checkpoint_every": 250,
    "seed": 0,
    "alias": "production",
    "tags": {"starter": "true"},
    "description": "starter support-desk model, trained by corral train on the known intents",
}


def rows(path: Path = KNOWN_FILE, split: str | None = None) -> list[dict[str, Any]]:
    loaded = load_file(path).rows
    return [r for r in loaded if split is None or r.get("split") == split]


def train_tokenizer(out_dir: Path = TOKENIZER_DIR, vocab_size: int = 1024) -> Any:
    """A byte-level BPE trained on the whole corpus, saved with a ChatML chat template."""
    texts = [m["content"] for path in (KNOWN_FILE, NEW_FILE) for r in rows(path) for m in r["messages"]]
    return train_bpe_tokenizer(texts + ["user", "assistant", "system"], out_dir, vocab_size)


def init_model(out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialised Llama with the starter tokenizer: the base `corral train` starts from."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **ARCHITECTURE,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def build_starter_model(
    registry: Registry, console: Console | None = None, *, progress: bool = True
) -> ModelVersion:
    """Train the starter model from scratch with `corral train` and register it as the next `starter`."""
    from corral.train import parse_spec, train

    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        train_tokenizer()
    dataset = registry.datasets.register(
        DATASET_NAME,
        rows(KNOWN_FILE),
        kind="chat",
        lineage={"source": "corral starter corpus (known intents)"},
    )
    with tempfile.TemporaryDirectory(prefix="corral-starter-") as tmp:
        base = init_model(Path(tmp) / "init")
        spec = parse_spec({**TRAIN_SPEC, "base": str(base), "dataset": dataset.ref}, "starter spec")
        result = train(spec, registry, progress=progress, console=console)
    assert result.version is not None
    return result.version


def ensure_starter_model(registry: Registry, console: Console | None = None) -> ModelVersion:
    """`starter@production`: registered from the packaged weights on first call (trained if they are
    missing), along with the `support` and `support-new` datasets. Safe to call again."""
    try:
        return registry.models.resolve(f"{MODEL_NAME}@production")
    except NotFoundError:
        pass
    existing = [v for v in _versions(registry) if v.stage != "retired"]
    if existing:
        return registry.models.set_alias(
            MODEL_NAME, "production", existing[0].version, reason="starter model"
        )
    registry.datasets.register(
        NEW_DATASET_NAME,
        rows(NEW_FILE),
        kind="chat",
        lineage={"source": "corral starter corpus (held-back intents)"},
    )
    if not (MODEL_DIR / "model.safetensors").is_file():
        return build_starter_model(registry, console)
    dataset = registry.datasets.register(
        DATASET_NAME,
        rows(KNOWN_FILE),
        kind="chat",
        lineage={"source": "corral starter corpus (known intents)"},
    )
    info = json.loads((MODEL_DIR / "corral_starter.json").read_text())
    version = registry.models.register(
        MODEL_NAME,
        MODEL_DIR,
        lineage={"dataset": dataset.ref, "base": "random init", "method": "full", "config": info["spec"]},
        metrics=info["metrics"],
        tags=TRAIN_SPEC["tags"],
        description=TRAIN_SPEC["description"],
    )
    return registry.models.set_alias(MODEL_NAME, "production", version.version, reason="starter model")


def _versions(registry: Registry) -> list[ModelVersion]:
    try:
        return registry.models.versions(MODEL_NAME)
    except NotFoundError:
        return []


def export(
    registry: Registry,
    version: ModelVersion,
    out_dir: Path = MODEL_DIR,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Copy a trained starter version into the package, with its spec and metrics beside it."""
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(registry.models.materialize(version), out_dir, ignore=shutil.ignore_patterns(".corral-*"))
    info = {"spec": version.lineage.get("config", {}), "metrics": {**version.metrics, **(metrics or {})}}
    (out_dir / "corral_starter.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return out_dir
