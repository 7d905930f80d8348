"""PII fast path: one compiled pattern set with checksum validation, shared by datasets and the gateway.

`find_pii(text)` finds emails, phone numbers (international formats), payment cards (Luhn),
IBANs (mod 97), IP addresses (v4 and v6) and the national ids in `NATIONAL_IDS`; `redact`
replaces each with a typed placeholder such as `[EMAIL]`. Checksums keep order numbers,
prices and dates from being taken for PII. No model, no download.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

KINDS = ("email", "iban", "card", "ssn", "nino", "es_nif", "ip", "phone")
# The documented national id set: what each code means and how it is checked.
NATIONAL_IDS = {
    "ssn": "US social security number, AAA-GG-SSSS; area not 000, 666 or 9xx, group and serial not zero",
    "nino": "UK national insurance number, two letters, six digits, a suffix A-D; HMRC's prefix rules",
    "es_nif": "Spanish DNI/NIE, 8 digits (NIE: X/Y/Z + 7) and the mod-23 control letter",
}


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


def ssn_ok(candidate: str) -> bool:
    area, group, serial = candidate.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


_NINO_BAD_PREFIX = {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}


def nino_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    return s[:2] not in _NINO_BAD_PREFIX and s[0] not in "DFIQUV" and s[1] not in "DFIOQUV"


_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_nif_ok(candidate: str) -> bool:
    s = candidate.replace("-", "").upper()
    number = s[:-1].replace("X", "0").replace("Y", "1").replace("Z", "2")
    return _NIF_LETTERS[int(number) % 23] == s[-1]


def _ip_ok(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _phone_ok(s: str) -> bool:
    return 9 <= len(_digits(s)) <= 15 and (s.startswith(("+", "(", "0")) or not s.isdigit())


_PATTERNS = {
    "email": r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b",
    "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
    "card": r"(?<![\d-])[1-9](?:[ -]?\d){12,18}(?![\d-])",
    "ssn": r"\b\d{3}-\d{2}-\d{4}\b",
    "nino": r"\b[A-Za-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]\b",
    "es_nif": r"\b(?:\d{8}|[XYZxyz]\d{7})-?[A-Za-z]\b",
    "ip": r"\b(?:\d{1,3}\.){3}\d{1,3}\b|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::?[0-9A-Fa-f]{1,4}){1,7}(?![\w:])",
    # An optional +country code, then 9+ digits that may be grouped by spaces, dots, dashes or ().
    "phone": r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,5}(?!\w)",
}
_CHECKS: dict[str, Callable[[str], bool]] = {
    "email": lambda s: True,
    "iban": iban_ok,
    "card": lambda s: luhn_ok(_digits(s)),
    "ssn": ssn_ok,
    "nino": nino_ok,
    "es_nif": es_nif_ok,
    "ip": _ip_ok,
    "phone": _phone_ok,
}


@lru_cache(maxsize=16)
def _scanner(kinds: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for the wanted kinds, in priority order: one scan finds every candidate.

    A candidate whose check fails is skipped whole: a number shaped like a card or an SSN that
    fails its checksum is an order number, not someone's phone.
    """
    return re.compile("|".join(f"(?P<{kind}>{_PATTERNS[kind]})" for kind in kinds))


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[PIIFinding]:
    """Non-overlapping PII spans in `text`, in order."""
    wanted = set(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    found: list[PIIFinding] = []
    for match in _scanner(tuple(k for k in KINDS if k in wanted)).finditer(text):
        kind = match.lastgroup or ""
        if _CHECKS[kind](match.group()):
            found.append(PIIFinding(kind, match.start(), match.end(), match.group()))
    return found


def replace_spans(text: str, findings: Iterable[PIIFinding], label: Callable[[PIIFinding], str]) -> str:
    """`text` with each (sorted, non-overlapping) finding replaced by `label(finding)`."""
    parts: list[str] = []
    last = 0
    for f in findings:
        parts.append(text[last : f.start])
        parts.append(label(f))
        last = f.end
    parts.append(text[last:])
    return "".join(parts)


def redact(text: str, kinds: Iterable[str] = KINDS) -> RedactionResult:
    """`text` with every PII span replaced by `[KIND]`, and what was found."""
    findings = find_pii(text, kinds)
    return RedactionResult(replace_spans(text, findings, lambda f: f"[{f.kind.upper()}]"), findings)
