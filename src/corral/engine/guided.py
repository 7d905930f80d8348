"""Guided decoding: grammars (JSON, a JSON schema, tool calls) compiled once, matched per sequence, masking logits.

xgrammar (PyPI) does the work: a compiled grammar is shared by every request that asks for the
same thing; each sequence gets its own matcher, which fills its row of a token bitmask before
sampling and accepts the sampled token after. xgrammar was chosen over llguidance by measured
cost: filling one mask on the starter's vocabulary took ~6 µs against llguidance's ~86 µs
(docs/engine.md).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from torch import Tensor

from corral.errors import InvalidInputError

# fixed separators: the model sees and writes JSON as the chat template prints it (tojson), and a
# random model cannot loop on whitespace
SEPARATORS = (", ", ": ")


def literal(text: str) -> Any:
    """A grammar that accepts exactly `text`."""
    import xgrammar as xgr

    return xgr.Grammar.from_ebnf(f"root ::= {json.dumps(text)}")


def schema_grammar(schema: Any) -> Any:
    import xgrammar as xgr

    try:
        return xgr.Grammar.from_json_schema(
            json.dumps(schema), any_whitespace=False, separators=SEPARATORS, strict_mode=True
        )
    except Exception as exc:  # noqa: BLE001 - xgrammar raises RuntimeError/ValueError for a bad schema
        raise InvalidInputError(f"the JSON schema cannot be used for guided decoding: {exc}") from None


class GrammarBook:
    """The tokenizer's vocabulary as xgrammar sees it, and a compiler whose cache outlives requests."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=1)
        self.vocab_size = vocab_size
        self._lock = threading.Lock()  # compiled from the event loop's thread pool

    def json_object(self) -> Any:
        with self._lock:
            return self.compiler.compile_builtin_json_grammar()

    def json_schema(self, schema: Any) -> Any:
        if not isinstance(schema, dict):
            raise InvalidInputError("'response_format.json_schema.schema' must be a JSON object")
        return self.compile(schema_grammar(schema))

    def compile(self, grammar: Any) -> Any:
        with self._lock:
            return self.compiler.compile_grammar(grammar)

    def matcher(self, compiled: Any) -> Any:
        return self._xgr.GrammarMatcher(compiled)


def apply_masks(logits: Tensor, matchers: list[tuple[int, Any]]) -> None:
    """Mask (to -inf) each guided row's tokens its grammar does not allow next, in place."""
    import xgrammar as xgr

    bitmask = xgr.allocate_token_bitmask(logits.shape[0], logits.shape[-1])
    for row, matcher in matchers:
        matcher.fill_next_token_bitmask(bitmask, row)
    rows = [row for row, _ in matchers]
    if logits.device.type == "cpu":
        xgr.apply_token_bitmask_inplace(logits, bitmask, indices=rows)
    else:
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device, non_blocking=True), indices=rows)
