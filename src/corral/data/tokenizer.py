"""Byte-level BPE tokenizers trained on our own text, saved in Hugging Face format with a ChatML template.

Nothing can be downloaded here, so the starter model and the tiny test models get tokenizers
trained locally; both use this one function so they stay the same kind of tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# ChatML; also what training saves with a base tokenizer that has no chat template of its own.
# With `tools`, a system turn lists them (one JSON line each) and says how to call one; assistant
# turns show their calls and `tool` turns their results, as Hermes/Qwen templates do. Without tools
# it renders exactly the plain ChatML the starter model was trained on.
CHATML_TEMPLATE = (
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ 'Tools you may call:\n' }}"
    "{% for tool in tools %}{{ (tool['function'] if tool['function'] is defined else tool) | tojson }}"
    "{{ '\n' }}{% endfor %}"
    "{{ 'Call one as <tool_call> JSON with name and arguments </tool_call>.<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{{ '<tool_call>\n' + {'name': call['function']['name'], 'arguments': call['function']['arguments']}"
    " | tojson + '\n</tool_call>' }}"
    "{% endfor %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def template_tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI tool call as the template renders it: `arguments` parsed from its JSON string, so a
    trained conversation shows the same `<tool_call>` text the engine's guided decoding produces."""
    fn = call.get("function") or {}
    args = fn.get("arguments", "{}")
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        parsed = args
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": fn.get("name"), "arguments": parsed},
    }


def train_bpe_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int) -> Any:
    """Train a byte-level BPE on `texts` and save it (with the ChatML template) as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<pad>",
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast
