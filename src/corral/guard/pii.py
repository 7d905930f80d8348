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
    parts = candidate.split(".")
    if len(parts) == 4 and candidate.isascii():  # v4 as ipaddress checks it, without building an object
        return all(p.isdigit() and len(p) <= 3 and (p == "0" or p[0] != "0") and int(p) <= 255 for p in parts)
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
    # Possessive repeats: a long run of digits is split one way only, never backtracked into.
    "phone": r"(?<![\w+])(?:\+\d{1,3}+[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}+(?:[ .-]?\d{2,4}+){1,5}+(?!\w)",
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


_EMAIL = re.compile(_PATTERNS["email"])
_IPV6 = re.compile(_PATTERNS["ip"].split("|", 1)[1])
# The first digit of each run of digits: every other kind's span starts there or at most 3
# characters before it ("GB82", "AB 12", "X123", "+44", "(415)", "fe80::"), so the scanner is
# tried only at those few places instead of at every character.
_DIGIT_RUN = re.compile(r"\d+")
_ASCII_DIGITS = "0123456789"
_BACK = 3


def _prefix_start(text: str, p: int, done: int) -> int:
    """Where a span ending in the digit run at `p` may start: over letters, `+` and `(` just before it."""
    q = p
    while q > done and p - q < _BACK and (text[q - 1].isalpha() or text[q - 1] in "+("):
        q -= 1
    if q == p and p - 3 >= done and text[p - 1] == " " and text[p - 3 : p - 1].isalpha():
        q = p - 3  # "AB 12 34 56 C": a national insurance number's letters, then a space
    return q


@lru_cache(maxsize=16)
def _scanner(kinds: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for the wanted kinds, in priority order."""
    return re.compile("|".join(f"(?P<{kind}>{_PATTERNS[kind]})" for kind in kinds))


def _numeric(text: str, kinds: tuple[str, ...]) -> list[PIIFinding]:
    if text.isascii() and not any(d in text for d in _ASCII_DIGITS):
        return []  # ten memchr scans: far cheaper than the regex's walk over text with no digit
    scanner = _scanner(kinds)
    found: list[PIIFinding] = []
    done = 0  # nothing before this can start a new span
    for run in _DIGIT_RUN.finditer(text):
        p = run.start()
        if p < done:
            continue
        for q in range(_prefix_start(text, p, done), p + 1):
            match = scanner.match(text, q)
            if match is None:
                continue
            kind = match.lastgroup or ""
            # A candidate whose check fails is skipped whole: a number shaped like a card or
            # an SSN that fails its checksum is an order number, not someone's phone.
            done = match.end()
            if _CHECKS[kind](match.group()):
                found.append(PIIFinding(kind, match.start(), match.end(), match.group()))
            break
    return found


def _emails(text: str) -> list[PIIFinding]:
    found = []
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and (text[start - 1].isalnum() or text[start - 1] in "._+-"):
            start -= 1
        match = _EMAIL.match(text, start)
        if match is not None:
            found.append(PIIFinding("email", match.start(), match.end(), match.group()))
            at = text.find("@", match.end())
        else:
            at = text.find("@", at + 1)
    return found


def _merge(first: list[PIIFinding], second: list[PIIFinding]) -> list[PIIFinding]:
    """Both lists' spans in order; where they overlap, the one from `first` wins."""
    if not first or not second:
        return first or second
    kept = [f for f in second if not any(f.start < e.end and e.start < f.end for e in first)]
    return sorted(first + kept, key=lambda f: f.start)


@lru_cache(maxsize=64)
def _wanted(kinds: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The kinds asked for, and those of them the digit-run scanner finds (all but e-mail)."""
    wanted = frozenset(kinds)
    unknown = wanted - set(KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    return wanted, tuple(k for k in KINDS if k in wanted and k != "email")


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[PIIFinding]:
    """Non-overlapping PII spans in `text`, in order."""
    wanted, numeric_kinds = _wanted(tuple(kinds))
    emails = _emails(text) if "email" in wanted and "@" in text else []
    found = _numeric(text, numeric_kinds) if numeric_kinds else []
    if "ip" in wanted and "::" in text:  # v6 addresses may start with hex letters, far from a digit
        v6 = [
            PIIFinding("ip", m.start(), m.end(), m.group()) for m in _IPV6.finditer(text) if _ip_ok(m.group())
        ]
        found = _merge(found, v6)
    return _merge(emails, found)


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
