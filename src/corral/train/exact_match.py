"""Greedy exact match of a model's answers against chat rows: the starter model's quality check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class ExactMatch:
    total: int
    correct: int
    misses: list[tuple[str, str, str]] = field(default_factory=list)  # question, expected, got

    @property
    def score(self) -> float:
        return self.correct / self.total if self.total else 0.0


def load_for_generation(model_dir: Path, base_dir: Path | None = None) -> tuple[Any, Any]:
    """A model ready for greedy decoding: full weights, or a LoRA adapter over `base_dir`."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if base_dir is None:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    else:
        from peft import PeftModel

        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    return model.eval(), tokenizer


@torch.no_grad()
def greedy_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    batch_size: int = 32,
    max_new_tokens: int = 64,
) -> list[str]:
    """The model's greedy reply to each conversation, rendered with its own chat template."""
    answers: list[str] = []
    for i in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
            for p in prompts[i : i + batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


def exact_match(model_dir: Path, rows: list[dict[str, Any]], base_dir: Path | None = None) -> ExactMatch:
    """Share of chat rows whose last assistant message the model reproduces exactly."""
    model, tokenizer = load_for_generation(model_dir, base_dir)
    prompts = [r["messages"][:-1] for r in rows]
    expected = [r["messages"][-1]["content"].strip() for r in rows]
    got = greedy_answers(model, tokenizer, prompts)
    result = ExactMatch(len(rows), sum(g == e for g, e in zip(got, expected, strict=True)))
    result.misses = [
        (p[-1]["content"], e, g) for p, e, g in zip(prompts, expected, got, strict=True) if g != e
    ]
    return result
