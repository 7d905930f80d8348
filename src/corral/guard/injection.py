"""Prompt-injection heuristics for the known attack families, including payloads hidden in base64 or hex."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from corral.guard.moderation import fold, folded_pattern, gated, has_needs

FAMILIES: dict[str, tuple[str, ...]] = {
    "instruction_override": (
        r"(?:ignore|disregard|forget|override|bypass) (?:all |any |the |your |my )*(?:previous|prior|above|earlier|preceding|original|system) (?:instructions|prompts?|rules|directions|guidelines|messages)",
        r"(?:ignore|disregard|forget) (?:everything|all) (?:you were told|above|before this)",
        r"new (?:instructions|rules): (?:you|from now)",
        r"from now on,? you (?:will|must) (?:ignore|disregard|answer without)",
    ),
    "role_play_jailbreak": (
        r"you are (?:now )?(?:DAN|STAN|DUDE|an? (?:unfiltered|uncensored|unrestricted) (?:AI|model|assistant))",
        r"\bdo anything now\b",
        r"(?:pretend|act|imagine) (?:that )?(?:you are|you're|to be|as) (?:an? )?(?:AI|assistant|model|chatbot)? ?(?:with(?:out)? (?:no )?(?:restrictions|filters|rules|limits|guidelines)|that (?:has no|ignores) (?:rules|restrictions|filters))",
        r"(?:enable|enter|activate) (?:developer|god|jailbreak|sudo) mode",
        r"no (?:ethical|moral) (?:guidelines|restrictions|constraints) apply",
    ),
    "system_prompt_extraction": (
        r"(?:reveal|print|show|repeat|output|tell me|display|leak|dump) (?:me )?(?:your|the) (?:full |entire |original |hidden |initial )*(?:system prompt|system message|initial instructions|hidden instructions|instructions above|prompt above)",
        r"what (?:is|was|are|were) (?:your|the) (?:system prompt|initial instructions|hidden instructions)",
        r"repeat (?:the|all) (?:text|words) above (?:starting|beginning) with",
    ),
}
# For each heuristic, lower-case strings every match contains: one of each group. A heuristic is run
# only on text that has them ("act", "mode" or "prompt" alone run nothing), and only those that could
# match are run: the whole set costs ~0.4 ms per KB.
NEEDS: dict[str, tuple[tuple[str, ...], ...]] = {
    FAMILIES["instruction_override"][0]: (("ignore", "disregard", "forget", "override", "bypass"),),
    FAMILIES["instruction_override"][1]: (("ignore", "disregard", "forget"),),
    FAMILIES["instruction_override"][2]: (("new instructions", "new rules"),),
    FAMILIES["instruction_override"][3]: (("from now on",),),
    FAMILIES["role_play_jailbreak"][0]: (
        ("dan", "stan", "dude", "unfiltered", "uncensored", "unrestricted"), ("you are",)),
    FAMILIES["role_play_jailbreak"][1]: (("do anything now",),),
    FAMILIES["role_play_jailbreak"][2]: (
        ("restrictions", "filters", "rules", "limits", "guidelines"), ("pretend", "act", "imagine")),
    FAMILIES["role_play_jailbreak"][3]: ((" mode",), ("developer", "god", "jailbreak", "sudo")),
    FAMILIES["role_play_jailbreak"][4]: (("ethical", "moral"),),
    FAMILIES["system_prompt_extraction"][0]: (
        ("system prompt", "system message", "instructions", "prompt above"),),
    FAMILIES["system_prompt_extraction"][1]: (("system prompt", "instructions"),),
    FAMILIES["system_prompt_extraction"][2]: (("above",), ("repeat",)),
}  # fmt: skip
# Every heuristic match contains one of these (each heuristic's first group).
TRIGGERS = tuple(dict.fromkeys(n for groups in NEEDS.values() for n in groups[0]))
_DECODE_NEEDS = (("decode", "base64", "hex", "rot13"), ("then ", "and "))
_EACH = tuple(
    (family, folded_pattern(pattern), NEEDS[pattern])
    for family, patterns in FAMILIES.items()
    for pattern in patterns
)
_HEURISTICS = re.compile(
    "|".join(f"(?P<{family}>{'|'.join(p)})" for family, p in FAMILIES.items()), re.IGNORECASE
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_DECODE_REQUEST = re.compile(
    r"(?:decode|base64|hex|rot13)[^.\n]{0,60}(?:then|and) (?:follow|execute|obey|do|run) (?:it|them|the instructions)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class InjectionResult:
    detected: bool
    families: tuple[str, ...]


_MIN_PAYLOAD = 24  # the shortest run either pattern takes (base64: 24; hex: 32)


def _decoded_payloads(text: str) -> list[str]:
    # A run of base64 or hex characters holds no whitespace: only words that long can hold one, and
    # the patterns find the same runs in them as in the whole text (whitespace bounds either way).
    long_words = [w for w in text.split() if len(w) >= _MIN_PAYLOAD]
    if not long_words:
        return []
    text = " ".join(long_words)
    out = []
    for match in _BASE64.finditer(text):
        raw = match.group()
        try:
            out.append(base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True).decode("utf-8"))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
    for match in _HEX.finditer(text):
        raw = match.group()
        try:
            out.append(bytes.fromhex(raw[: len(raw) // 2 * 2]).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
    return out


def detect_injection(text: str) -> InjectionResult:
    """The attack families `text` shows; `encoded_payload` when one hides inside base64 or hex."""
    lowered = fold(text)
    families = {f for f, pattern in gated(lowered, TRIGGERS, _EACH) if pattern.search(lowered)}
    if has_needs(lowered, _DECODE_NEEDS) and _DECODE_REQUEST.search(text):
        families.add("encoded_payload")
    for payload in _decoded_payloads(text):
        if _HEURISTICS.search(payload):
            families.add("encoded_payload")
            break
    ordered = tuple(f for f in (*FAMILIES, "encoded_payload") if f in families)
    return InjectionResult(bool(ordered), ordered)
