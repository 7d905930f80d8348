"""Dataset rows → token ids with labels masked on prompt tokens, and a batch order that is a pure function of the step.

Chat rows are rendered with the tokenizer's own chat template (the one saved with the model and
used by the worker), and only the assistant turns are trained on. Because the batch for any
micro-step is computed from (seed, step) alone, resuming needs no data-loader state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from corral.data.tokenizer import CHATML_TEMPLATE, template_tool_call
from corral.errors import InvalidInputError

IGNORE = -100
# Used only when a base tokenizer has none; it is then saved with the result so serving matches.
DEFAULT_CHAT_TEMPLATE = CHATML_TEMPLATE


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the token is prompt, not target


def _render(
    tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool, tools: Any = None
) -> str:
    extra = {"tools": tools} if tools else {}
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt, **extra
        )
    )


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """What the chat template reads of a row's message: role, content and any tool calls."""
    out = {"role": message["role"], "content": message["content"]}
    if message.get("tool_calls"):
        out["tool_calls"] = [template_tool_call(c) for c in message["tool_calls"]]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def target_spans(row: dict[str, Any], kind: str, tokenizer: Any) -> tuple[str, list[tuple[int, int]]]:
    """The full text of a row and the character spans the model learns to produce."""
    if kind == "classification":  # the text asks and the label answers, so the served model (chat) labels
        row = {
            "messages": [
                {"role": "user", "content": row["text"]},
                {"role": "assistant", "content": str(row["label"])},
            ]
        }
        kind = "chat"
    if kind == "chat":
        messages = [_message(m) for m in row["messages"]]
        tools = row.get("tools")
        text = _render(tokenizer, messages, False, tools)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = _render(tokenizer, messages[:i], True, tools) if i or tools else ""
            upto = _render(tokenizer, messages[: i + 1], False, tools)
            if not (text.startswith(upto) and upto.startswith(before)):
                raise InvalidInputError(
                    "the tokenizer's chat template does not render conversations prefix by prefix"
                )
            spans.append((len(before), len(upto)))
        return text, spans
    prompt, completion = row["prompt"], row["completion"]  # prompt_completion
    eos = tokenizer.eos_token or ""
    return prompt + completion + eos, [(len(prompt), len(prompt) + len(completion) + len(eos))]


def encode(row: dict[str, Any], kind: str, tokenizer: Any, max_len: int) -> Example | None:
    """Token ids and labels for one row, cut to `max_len`; None when no target token survives the cut."""
    text, spans = target_spans(row, kind, tokenizer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])[:max_len]
    offsets = list(encoded["offset_mapping"])[:max_len]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE
        for token, (begin, _) in zip(ids, offsets, strict=True)
    ]
    if all(label == IGNORE for label in labels[1:]):
        return None
    return Example(ids, labels)


def encode_rows(
    rows: list[dict[str, Any]], kind: str, tokenizer: Any, max_len: int
) -> tuple[list[Example], int]:
    """Encoded examples and how many rows were skipped for having no target tokens within max_len."""
    examples = [encode(row, kind, tokenizer, max_len) for row in rows]
    kept = [e for e in examples if e is not None]
    return kept, len(examples) - len(kept)


def micro_batch_indices(counter: int, n: int, batch_size: int, world: int, rank: int, seed: int) -> list[int]:
    """Example indices for micro-batch number `counter` on `rank`: epochs are seeded permutations,
    and every rank takes its own slice of the same global batch."""
    start = (counter * world + rank) * batch_size
    out = []
    for position in range(start, start + batch_size):
        epoch, offset = divmod(position, n)
        out.append(int(_permutation(n, seed + epoch)[offset]))
    return out


_PERMS: dict[tuple[int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int) -> torch.Tensor:
    if (n, seed) not in _PERMS:
        if len(_PERMS) > 4:
            _PERMS.clear()
        _PERMS[(n, seed)] = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return _PERMS[(n, seed)]


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example; padding is masked out of attention and loss."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def target_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Tokens the loss is computed on (labels are shifted by one: the first never counts)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
