"""Scores a detector against a labelled span corpus: precision and recall per kind, span agreement."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from corral.guard.pii import PIIFinding

Span = tuple[int, int, str]


@dataclass(frozen=True)
class KindScore:
    kind: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def load_corpus(path: Path) -> list[tuple[str, set[Span]]]:
    """A JSONL corpus of {"text", "spans": [[start, end, kind], ...]}."""
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            out.append((item["text"], {(s[0], s[1], s[2]) for s in item["spans"]}))
    return out


def spans_of(findings: Iterable[PIIFinding]) -> set[Span]:
    return {(f.start, f.end, f.kind) for f in findings}


def score(
    corpus: list[tuple[str, set[Span]]], detect: Callable[[str], list[PIIFinding]]
) -> dict[str, KindScore]:
    """Exact-span precision and recall of `detect` per kind."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for text, expected in corpus:
        found = spans_of(detect(text))
        for span in found & expected:
            tp[span[2]] += 1
        for span in found - expected:
            fp[span[2]] += 1
        for span in expected - found:
            fn[span[2]] += 1
    kinds = sorted(set(tp) | set(fp) | set(fn))
    return {k: KindScore(k, tp[k], fp[k], fn[k]) for k in kinds}


def agreement(found_a: list[set[Span]], found_b: list[set[Span]]) -> float:
    """Share of spans (found by either engine) that both found exactly."""
    both = sum(len(a & b) for a, b in zip(found_a, found_b, strict=True))
    either = sum(len(a | b) for a, b in zip(found_a, found_b, strict=True))
    return both / either if either else 1.0
