"""Messages to prompt text: the tokenizer's chat template, or a documented ChatML default."""

from __future__ import annotations

from typing import Any

from corral.errors import InvalidInputError

# Used when the tokenizer has no chat template (GPT-2 and many base models): ChatML, the format
# Qwen and many fine-tunes use, ending with an open assistant turn.
DEFAULT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    template = getattr(tokenizer, "chat_template", None) or DEFAULT_TEMPLATE
    try:
        return str(
            tokenizer.apply_chat_template(
                messages, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        )
    except Exception as exc:  # noqa: BLE001 - a template may raise anything (e.g. raise_exception)
        raise InvalidInputError(f"the model's chat template rejected these messages: {exc}") from None
