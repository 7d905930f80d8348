"""Messages to prompt text: the tokenizer's chat template, or corral's ChatML default (with tools)."""

from __future__ import annotations

from typing import Any

from corral.data.tokenizer import CHATML_TEMPLATE
from corral.errors import InvalidInputError

# Used when the tokenizer has no chat template (GPT-2 and many base models): ChatML, the format
# Qwen and many fine-tunes use, ending with an open assistant turn; one source with the starter's.
DEFAULT_TEMPLATE = CHATML_TEMPLATE


def render_chat(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> str:
    """The prompt text; `tools` (OpenAI's tool objects) go to the template, as HF templates take them."""
    template = getattr(tokenizer, "chat_template", None) or DEFAULT_TEMPLATE
    try:
        return str(
            tokenizer.apply_chat_template(
                messages, tools=tools, chat_template=template, tokenize=False, add_generation_prompt=True
            )
        )
    except Exception as exc:  # noqa: BLE001 - a template may raise anything (e.g. raise_exception)
        raise InvalidInputError(f"the model's chat template rejected these messages: {exc}") from None
