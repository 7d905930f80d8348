"""Drift references that are not a time window: a registered dataset version, or the one a model trained on.

A dataset row has no latency, cost or token counts, so a dataset reference tests what a row and a
trace share: prompt and output lengths (in characters) and their texts.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from corral.errors import InvalidInputError
from corral.gateway.costs import answer_text, prompt_text
from corral.registry import Registry

TRAINED_ON = "trained-on:"
LENGTHS = ("prompt_chars", "output_chars")


def row_texts(row: dict[str, Any]) -> tuple[str, str | None]:
    """(prompt, output) of a dataset row as a trace of it would read: chat, prompt+completion, text+label."""
    messages = row.get("messages")
    if isinstance(messages, list):
        last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
                   default=None)  # fmt: skip
        if last is None:
            return prompt_text({"messages": messages}), None
        answer = answer_text({"choices": [{"message": messages[last]}]})
        return prompt_text({"messages": messages[:last]}), answer
    if "prompt" in row:
        completion = row.get("completion")
        return prompt_text({"prompt": row["prompt"]}), completion if isinstance(completion, str) else None
    text = row.get("text")
    return (text if isinstance(text, str) else ""), None


def lengths(pairs: list[tuple[str, str | None]]) -> dict[str, np.ndarray]:
    """The length features of (prompt, output) pairs; pairs without an output count only for prompts."""
    return {
        "prompt_chars": np.array([float(len(p)) for p, _ in pairs]),
        "output_chars": np.array([float(len(o)) for _, o in pairs if o]),
    }


def resolve(registry: Registry, spec: str) -> str:
    """The dataset version `spec` names: a dataset ref (`faq@2`, `faq`), or `trained-on:MODEL_REF`,
    the dataset a model version was trained on (its lineage)."""
    if not spec.startswith(TRAINED_ON):
        return registry.datasets.get(spec).ref
    model_ref = spec[len(TRAINED_ON) :]
    version = registry.models.resolve(model_ref)
    dataset = version.lineage.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInputError(
            f"model version {version.ref} records no training dataset",
            hint="give the dataset version itself, e.g. faq@2",
        )
    return registry.datasets.get(dataset).ref


def sample_dataset(
    registry: Registry, spec: str, split: str | None = None, *, max_numeric: int, max_text: int, seed: int = 1
) -> dict[str, Any]:
    """A bounded random sample of a dataset version as a drift reference (the same shape as a window's).

    Without `split`, a dataset with a `train` split gives that split (what a model trained on), else all rows.
    """
    ref = resolve(registry, spec)
    rows = registry.datasets.rows(ref)
    if split is None and any(r.get("split") == "train" for r in rows):
        split = "train"
    if split is not None:
        rows = [r for r in rows if r.get("split") == split]
    if not rows:
        raise InvalidInputError(f"dataset {ref} has no rows" + (f" in split '{split}'" if split else ""))
    rng = random.Random(seed)
    picked = rng.sample(rows, min(len(rows), max_numeric))
    pairs = [row_texts(r) for r in picked]
    texts = pairs[:max_text]
    return {
        "numeric": lengths(pairs),
        "texts": {
            "prompt": [(f"{ref}#{i}", p) for i, (p, _) in enumerate(texts)],
            "output": [(f"{ref}#{i}", o) for i, (_, o) in enumerate(texts) if o],
        },
        "count": len(picked),
        "label": f"dataset {ref}" + (f" ({split} split)" if split else ""),
        "dataset": ref,
        "split": split,
    }
