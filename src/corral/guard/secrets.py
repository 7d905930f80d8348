"""Secrets: provider API keys and tokens, private key blocks, bearer tokens, passwords in URLs."""

from __future__ import annotations

import re

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
_COMBINED = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _PATTERNS.items()))
_GROUPED = {"bearer_token", "url_password"}


def find_secrets(text: str) -> list[PIIFinding]:
    """Secret spans in `text`, in order (for a password in a URL, only the password)."""
    out = []
    for match in _COMBINED.finditer(text):
        kind = match.lastgroup or ""
        if kind in _GROUPED:
            # the secret is the pattern's first inner group: find it among the match's groups
            inner = _COMBINED.groupindex[kind] + 1
            start, end = match.span(inner)
        else:
            start, end = match.span()
        out.append(PIIFinding(kind, start, end, text[start:end]))
    return out


def redact_secrets(text: str) -> tuple[str, list[PIIFinding]]:
    """`text` with each secret replaced by `[SECRET]`, and what was found."""
    findings = find_secrets(text)
    return replace_spans(text, findings, lambda f: "[SECRET]"), findings
