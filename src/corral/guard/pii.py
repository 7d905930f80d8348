"""PII redaction: the one redactor that dataset building and the gateway's guardrails share.

`redact(text)` finds emails, phone numbers, payment cards (Luhn-checked), IBANs (mod-97
checked), IP addresses and US social security numbers, and replaces each with a typed
placeholder such as `[EMAIL]`. Checksums keep order numbers and prices from being redacted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

KINDS = ("email", "card", "iban", "ssn", "ip", "phone")


@dataclass(frozen=True)
class PIIFinding:
    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class RedactionResult:
    text: str
    findings: list[PIIFinding] = field(default_factory=list)

    @property
    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


# Each detector: a pattern and a check on the match; the first kind to claim a span wins.
_DETECTORS: dict[str, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), lambda s: True),
    "card": (
        re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
        lambda s: luhn_ok(_digits(s)),
    ),
    "iban": (
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
        iban_ok,
    ),
    "ssn": (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), lambda s: not s.startswith(("000", "666", "9"))),
    "ip": (
        re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|\b(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}\b"),
        _ip_ok,
    ),
    # An optional +country code, then 9+ digits that may be grouped by spaces, dots, dashes or ().
    "phone": (
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)"
        ),
        lambda s: 9 <= len(_digits(s)) <= 15 and (s.startswith(("+", "(", "0")) or not s.isdigit()),
    ),
}


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[PIIFinding]:
    """Non-overlapping PII spans in `text`, in order."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    taken: list[PIIFinding] = []
    for kind in KINDS:
        if kind not in wanted:
            continue
        pattern, check = _DETECTORS[kind]
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < f.end and f.start < end for f in taken) or not check(match.group()):
                continue
            taken.append(PIIFinding(kind, start, end, match.group()))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str, kinds: Iterable[str] = KINDS) -> RedactionResult:
    """`text` with every PII span replaced by `[KIND]`, and what was found."""
    findings = find_pii(text, kinds)
    parts: list[str] = []
    last = 0
    for f in findings:
        parts.append(text[last : f.start])
        parts.append(f"[{f.kind.upper()}]")
        last = f.end
    parts.append(text[last:])
    return RedactionResult("".join(parts), findings)
