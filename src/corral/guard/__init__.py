"""Guardrails: PII redaction, moderation, prompt injection, output schema."""

from corral.guard.pii import KINDS as PII_KINDS
from corral.guard.pii import PIIFinding, RedactionResult, find_pii, redact

__all__ = ["PII_KINDS", "PIIFinding", "RedactionResult", "find_pii", "redact"]
