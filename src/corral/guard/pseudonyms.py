"""Pseudonymize: consistent placeholders per request, restored in the answer, even when split across SSE chunks."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from corral.guard.pii import PIIFinding, replace_spans

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*)_(\d+)\]")
# The longest tail that could still grow into a placeholder: "[", "[EMA", "[EMAIL_1"...
_PARTIAL = re.compile(r"\[(?:[A-Z][A-Z_]*(?:_\d*)?)?$")
_MAX_PARTIAL = 32


@dataclass
class Pseudonyms:
    """One request's placeholder ↔ original map: the same value always gets the same placeholder."""

    originals: dict[str, str] = field(default_factory=dict)  # placeholder → original
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def placeholder(self, finding: PIIFinding) -> str:
        key = (finding.kind, finding.text)
        if key not in self._by_value:
            n = self._counts.get(finding.kind, 0) + 1
            self._counts[finding.kind] = n
            name = f"[{finding.kind.upper()}_{n}]"
            self._by_value[key] = name
            self.originals[name] = finding.text
        return self._by_value[key]

    def apply(self, text: str, findings: list[PIIFinding]) -> str:
        return replace_spans(text, findings, self.placeholder)

    def restore(self, text: str) -> str:
        """`text` with every known placeholder put back to its original (unknown ones left as they are)."""
        if not self.originals or "[" not in text:
            return text
        return PLACEHOLDER.sub(lambda m: self.originals.get(m.group(), m.group()), text)

    def restorer(self) -> StreamRestorer:
        return StreamRestorer(self)


@dataclass
class StreamRestorer:
    """Restores placeholders in a stream of text pieces, holding back a tail that may be half a placeholder."""

    pseudonyms: Pseudonyms
    held: str = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        partial = _PARTIAL.search(text, max(0, len(text) - _MAX_PARTIAL))
        cut = partial.start() if partial else len(text)
        self.held = text[cut:]
        return self.pseudonyms.restore(text[:cut])

    def flush(self) -> str:
        rest, self.held = self.held, ""
        return self.pseudonyms.restore(rest)
