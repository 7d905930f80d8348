"""Guardrails: PII, secrets, moderation, prompt injection, output schema, applied per policy."""

from corral.guard.injection import InjectionResult, detect_injection
from corral.guard.moderation import ModerationResult, moderate
from corral.guard.pii import KINDS as PII_KINDS
from corral.guard.pii import PIIFinding, RedactionResult, find_pii, redact
from corral.guard.policy import GuardResult, Verdict, check_input, check_output
from corral.guard.pseudonyms import Pseudonyms, StreamRestorer
from corral.guard.secrets import find_secrets, redact_secrets

__all__ = [
    "PII_KINDS",
    "GuardResult",
    "InjectionResult",
    "ModerationResult",
    "PIIFinding",
    "Pseudonyms",
    "RedactionResult",
    "StreamRestorer",
    "Verdict",
    "check_input",
    "check_output",
    "detect_injection",
    "find_pii",
    "find_secrets",
    "moderate",
    "redact",
    "redact_secrets",
]
