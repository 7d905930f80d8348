"""Perplexity of a local model on the reference answers: one forward pass per item, no generation."""

from __future__ import annotations

import math
from pathlib import Path

from corral.evaluate.outcome import Outcome


def score_perplexity(model_dir: Path, outcomes: list[Outcome]) -> None:
    """Set `scores["perplexity"]` to the mean negative log-likelihood per reference token (its log
    perplexity; the metric exponentiates the mean), the prompt rendered with the model's chat template."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    todo = [o for o in outcomes if o.reference]
    with torch.no_grad():
        for o in todo:
            prompt_ids, answer_ids = _encode(tokenizer, o)
            ids = torch.tensor([prompt_ids + answer_ids])
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
            nll = torch.nn.functional.cross_entropy(logits, ids[0, len(prompt_ids) :], reduction="mean")
            value = float(nll)
            o.scores["perplexity"] = value if math.isfinite(value) else None


def _encode(tokenizer: object, outcome: Outcome) -> tuple[list[int], list[int]]:
    tok: object = tokenizer
    request = outcome.request
    if "messages" in request and getattr(tok, "chat_template", None):
        prompt = tok.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
    else:
        prompt = str(request.get("prompt") or request.get("messages", [{}])[-1].get("content", ""))
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    answer_ids = tok(outcome.reference or "", add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    eos = getattr(tok, "eos_token_id", None)
    return list(prompt_ids) or [eos or 0], list(answer_ids) + ([eos] if eos is not None else [])
