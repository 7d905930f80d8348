"""Applies a guard policy to a request's texts and to an answer: pure functions returning verdicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.config.sections import GuardPolicy
from corral.guard.injection import detect_injection
from corral.guard.moderation import freeze_terms, moderate
from corral.guard.pii import KINDS, PIIFinding, find_pii, replace_spans
from corral.guard.pseudonyms import Pseudonyms
from corral.guard.secrets import find_secrets

BLOCKING = {"block"}


@dataclass(frozen=True)
class Verdict:
    """One check's decision: never the raw values, only which recognizers or categories fired."""

    check: str  # pii | secrets | moderation | injection | output_schema | limits
    action: str  # redact | pseudonymize | restore | flag | block
    found: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"check": self.check, "action": self.action, "found": list(self.found)}


@dataclass
class GuardResult:
    texts: list[str]
    verdicts: list[Verdict] = field(default_factory=list)
    pseudonyms: Pseudonyms | None = None

    @property
    def blocked(self) -> Verdict | None:
        return next((v for v in self.verdicts if v.action == "block"), None)


def _pii_finder(policy: GuardPolicy) -> Callable[[str], list[PIIFinding]]:
    kinds = tuple(policy.pii_kinds) or KINDS
    if policy.pii_engine == "presidio":
        from corral.guard.presidio import find_pii_presidio

        return lambda text: find_pii_presidio(text, kinds)
    return lambda text: find_pii(text, kinds)


def _kinds(findings: Sequence[PIIFinding]) -> tuple[str, ...]:
    return tuple(sorted({f.kind for f in findings}))


def _transform(
    result: GuardResult, check: str, mode: str, find: Callable[[str], list[PIIFinding]], label: str
) -> None:
    """Run one span check over every text, changing the texts when the mode says so."""
    found: list[PIIFinding] = []
    texts = []
    for text in result.texts:
        spans = find(text) if text else []
        found += spans
        if spans and mode == "redact":
            text = replace_spans(text, spans, lambda f: f"[{label or f.kind.upper()}]")
        elif spans and mode == "pseudonymize":
            result.pseudonyms = result.pseudonyms or Pseudonyms()
            text = result.pseudonyms.apply(text, spans)
        texts.append(text)
    if found:
        result.texts = texts
        result.verdicts.append(Verdict(check, mode, _kinds(found)))


def _detect(result: GuardResult, policy: GuardPolicy, *, injection: bool) -> None:
    joined = "\n".join(result.texts)
    if policy.moderation != "off":
        moderation = moderate(joined, freeze_terms(policy.moderation_terms))
        if moderation.flagged:
            hit = tuple(c for c, on in moderation.categories.items() if on)
            result.verdicts.append(Verdict("moderation", policy.moderation, hit))
    if injection and policy.injection != "off":
        attack = detect_injection(joined)
        if attack.detected:
            result.verdicts.append(Verdict("injection", policy.injection, attack.families))


def check_input(texts: list[str], policy: GuardPolicy, tokens: int | None = None) -> GuardResult:
    """Limits, secrets, PII, moderation and injection on a request's texts, in that order."""
    result = GuardResult(list(texts))
    size = sum(len(t) for t in texts)
    if policy.max_input_chars and size > policy.max_input_chars:
        result.verdicts.append(Verdict("limits", "block", (f"chars>{policy.max_input_chars}",)))
        return result
    if policy.max_input_tokens and tokens is not None and tokens > policy.max_input_tokens:
        result.verdicts.append(Verdict("limits", "block", (f"tokens>{policy.max_input_tokens}",)))
        return result
    if policy.secrets != "off":
        _transform(result, "secrets", policy.secrets, find_secrets, "SECRET")
    if policy.pii != "off" and not result.blocked:
        _transform(result, "pii", policy.pii, _pii_finder(policy), "")
    if not result.blocked:
        _detect(result, policy, injection=True)
    return result


def check_output(text: str, policy: GuardPolicy, pseudonyms: Pseudonyms | None = None) -> GuardResult:
    """An answer: secrets never leave, PII redacted (or pseudonyms restored), moderation on the answer."""
    result = GuardResult([text])
    if policy.secrets != "off":
        _transform(
            result, "secrets", "flag" if policy.secrets == "flag" else "redact", find_secrets, "SECRET"
        )
    if policy.pii == "pseudonymize" and pseudonyms is not None:
        restored = pseudonyms.restore(result.texts[0])
        if restored != result.texts[0]:
            result.texts = [restored]
            result.verdicts.append(Verdict("pii", "restore"))
    elif policy.pii in ("redact", "block"):
        _transform(result, "pii", "redact", _pii_finder(policy), "")
    elif policy.pii == "flag":
        _transform(result, "pii", "flag", _pii_finder(policy), "")
    _detect(result, policy, injection=False)
    return result


def scrubbed(text: str, policy: GuardPolicy) -> str:
    """A refused request's text as a trace may keep it: the secrets and PII the policy blocks or
    redacts replaced by placeholders (a block leaves them in place, which is fine for a request that
    is never forwarded, but not for the stored copy)."""
    if policy.secrets in ("block", "redact"):
        text = replace_spans(text, find_secrets(text), lambda f: "[SECRET]")
    if policy.pii in ("block", "redact"):
        text = replace_spans(text, _pii_finder(policy)(text), lambda f: f"[{f.kind.upper()}]")
    return text


def redacted_copy(value: Any) -> Any:
    """A JSON value with every string's secrets and PII replaced by placeholders (for stored bodies)."""
    if isinstance(value, str):
        text = replace_spans(value, find_secrets(value), lambda f: "[SECRET]")
        return replace_spans(text, find_pii(text), lambda f: f"[{f.kind.upper()}]")
    if isinstance(value, dict):
        return {k: redacted_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted_copy(v) for v in value]
    return value
