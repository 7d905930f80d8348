"""Moderation: term lists and patterns per category (OpenAI's category names), one compiled set per lexicon."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

# Phrases, not single words: "kill the process" and "shoot me an email" must pass.
DEFAULT_TERMS: dict[str, tuple[str, ...]] = {
    "violence": (
        r"(?:make|build|assemble) an? (?:pipe )?(?:bomb|explosive device|ied)",
        r"i(?:'m| am)? (?:going to|gonna|will) (?:kill|murder|stab|shoot) (?:you|him|her|them)",
        r"how (?:do i|to|can i) (?:kill|murder|poison) (?:a person|someone|my \w+)",
        r"mass shooting (?:plan|at)",
    ),
    "self-harm": (
        r"(?:kill|hurt) myself|cut myself(?! (?:a|some|off)\b)",
        r"end my (?:own )?life",
        r"(?:best|painless|easiest) (?:way|method)s? (?:to|of) (?:suicide|die|commit suicide)",
        r"i want to die",
    ),
    "hate": (
        r"(?:all|those) \w+(?: \w+)? (?:are|is) (?:vermin|subhuman|animals|a disease)",
        r"(?:exterminate|wipe out|gas) (?:all|the) \w+(?: people)?",
        r"\w+ (?:people )?(?:don't|do not) deserve to live",
    ),
    "harassment": (
        r"you(?: are|'re) (?:a )?(?:worthless|pathetic|disgusting) (?:piece of \w+|loser|idiot)",
        r"(?:go|just) (?:die|kill yourself)",
        r"i know where you live",
    ),
    "sexual": (
        r"(?:explicit|graphic) (?:sex|sexual) (?:scene|story|content)",
        r"(?:nude|naked) (?:photos|pictures|pics) of",
        r"sexual (?:content|acts?) (?:with|involving) (?:a )?(?:minor|child|children)",
    ),
    "illicit": (
        r"(?:make|cook|synthesi[sz]e) (?:meth|methamphetamine|fentanyl|heroin)",
        r"(?:buy|order) (?:cocaine|heroin|fentanyl) online",
        r"launder (?:the )?money",
        r"(?:write|make|build) (?:a )?(?:ransomware|keylogger|credit card skimmer)",
    ),
}
CATEGORIES = tuple(DEFAULT_TERMS)
# Every default pattern contains one of these (lower case): text with none of them skips the
# default lexicon's regex, which is what most traffic does (a `in` test is far cheaper).
TRIGGERS = (
    "bomb", "explosive", "ied", "kill", "murder", "stab", "shoot", "poison", "myself", "my life",
    "my own life", "suicide", "die", "vermin", "subhuman", "animals", "disease", "exterminate",
    "wipe out", "gas ", "deserve to live", "worthless", "pathetic", "disgusting", "where you live",
    "sex", "nude", "naked", "meth", "fentanyl", "heroin", "cocaine", "launder", "ransomware",
    "keylogger", "skimmer",
)  # fmt: skip


@dataclass(frozen=True)
class ModerationResult:
    flagged: bool
    categories: dict[str, bool]
    matches: dict[str, list[str]] = field(default_factory=dict)

    def as_openai(self) -> dict[str, object]:
        """One entry of `results` in OpenAI's /v1/moderations answer."""
        return {
            "flagged": self.flagged,
            "categories": self.categories,
            "category_scores": {c: 1.0 if hit else 0.0 for c, hit in self.categories.items()},
        }


@lru_cache(maxsize=32)
def _lexicon(extra: tuple[tuple[str, tuple[str, ...]], ...]) -> re.Pattern[str]:
    terms = {c: list(t) for c, t in DEFAULT_TERMS.items()}
    for category, more in extra:
        terms.setdefault(category, []).extend(more)
    groups = [
        f"(?P<c{i}>\\b(?:{'|'.join(patterns)})\\b)" for i, patterns in enumerate(terms.values()) if patterns
    ]
    return re.compile("|".join(groups), re.IGNORECASE)


def _category_names(extra: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    names = list(DEFAULT_TERMS)
    names += [c for c, _ in extra if c not in names]
    return names


def freeze_terms(terms: Mapping[str, list[str]] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Extra terms from a policy as a hashable key (terms are regular expressions, matched as words)."""
    return tuple(sorted((c, tuple(t)) for c, t in (terms or {}).items()))


def moderate(text: str, extra: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> ModerationResult:
    """Which categories `text` hits, by the default lists plus `extra` (see `freeze_terms`)."""
    names = _category_names(extra)
    matches: dict[str, list[str]] = {}
    if not extra:
        lowered = text.lower()
        if not any(t in lowered for t in TRIGGERS):
            return ModerationResult(False, dict.fromkeys(names, False))
    for match in _lexicon(extra).finditer(text):
        category = names[int((match.lastgroup or "c0")[1:])]
        matches.setdefault(category, []).append(match.group())
    categories = {c: c in matches for c in names}
    return ModerationResult(bool(matches), categories, matches)
