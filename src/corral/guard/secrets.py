"""Secrets: provider API keys and tokens, private key blocks, bearer tokens, passwords in URLs."""

from __future__ import annotations

import re
from functools import lru_cache

from corral.guard.pii import PIIFinding, replace_spans

# kind → pattern; the whole match is the secret except for `url_password`, where group 1 is.
_PATTERNS = {
    "private_key": r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z]+ )?PRIVATE KEY-----|\Z)",
    "anthropic_key": r"\bsk-ant-[A-Za-z0-9_-]{20,}",
    "openai_key": r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_-]{20,}",
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b",
    "slack_token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "google_api_key": r"\bAIza[0-9A-Za-z_-]{35}",
    "stripe_key": r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
    "huggingface_token": r"\bhf_[A-Za-z0-9]{30,}",
    "jwt": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "bearer_token": r"(?i:\bbearer\s+)([A-Za-z0-9._~+/-]{20,}=*)",
    "url_password": r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:([^\s@/]+)@",
}
KINDS = tuple(_PATTERNS)
# What each kind's text always contains: only the kinds whose marker is present are scanned for.
_MARKERS = {
    "private_key": ("PRIVATE KEY-----",),
    "anthropic_key": ("sk-ant-",),
    "openai_key": ("sk-",),
    "aws_access_key": ("AKIA", "ASIA"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "slack_token": ("xox",),
    "google_api_key": ("AIza",),
    "stripe_key": ("_live_", "_test_"),
    "huggingface_token": ("hf_",),
    "jwt": ("eyJ",),
    "bearer_token": (),  # case-insensitive: looked for in the lower-cased text
    "url_password": ("://",),
}


def _gate(marker: str) -> str:
    return "_" if "_" in marker else "-" if "-" in marker else ""


# Markers with a `_` or a `-` are looked for only when the text has one (most prose has neither).
_GATED = {
    gate: tuple((m, kind) for kind, ms in _MARKERS.items() for m in ms if _gate(m) == gate)
    for gate in ("", "_", "-")
}
_GROUPED = {"bearer_token", "url_password"}


@lru_cache(maxsize=64)
def _scanner(kinds: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?P<{kind}>{_PATTERNS[kind]})" for kind in kinds))


def _present(text: str) -> tuple[str, ...]:
    found: set[str] = set()
    for gate, markers in _GATED.items():
        if not gate or gate in text:
            found.update(kind for marker, kind in markers if marker in text)
    if "bearer" in text.lower():  # (?i:bearer): any mix of cases
        found.add("bearer_token")
    return tuple(k for k in KINDS if k in found) if found else ()


def find_secrets(text: str) -> list[PIIFinding]:
    """Secret spans in `text`, in order (for a password in a URL, only the password)."""
    kinds = _present(text)
    if not kinds:
        return []
    scanner = _scanner(kinds)
    out = []
    for match in scanner.finditer(text):
        kind = match.lastgroup or ""
        if kind in _GROUPED:
            # the secret is the pattern's first inner group, numbered right after the kind's group
            start, end = match.span(scanner.groupindex[kind] + 1)
        else:
            start, end = match.span()
        out.append(PIIFinding(kind, start, end, text[start:end]))
    return out


def redact_secrets(text: str) -> tuple[str, list[PIIFinding]]:
    """`text` with each secret replaced by `[SECRET]`, and what was found."""
    findings = find_secrets(text)
    return replace_spans(text, findings, lambda f: "[SECRET]"), findings
