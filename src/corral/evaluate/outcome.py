"""An item's outcome: what the target answered, how fast, at what cost, and the scores given to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    position: int
    request: dict[str, Any]
    reference: str | None
    prediction: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None
    # Scores that are not a function of the answer alone: judge, human raters, bias, perplexity.
    scores: dict[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None and self.prediction is not None
