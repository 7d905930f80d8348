"""PII thorough mode: Presidio's analyzer with an NLP-free engine, the same kinds as the fast path.

No spaCy model is loaded (Presidio's no-op NLP engine) and the email check's tldextract reads
the public suffix snapshot shipped inside tldextract, never the network. Needs the `guard` extra.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from corral.errors import ConfigError
from corral.guard.pii import KINDS, PIIFinding

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

# Presidio entity → the fast path's kind.
ENTITY_KINDS = {
    "EMAIL_ADDRESS": "email",
    "IBAN_CODE": "iban",
    "CREDIT_CARD": "card",
    "US_SSN": "ssn",
    "UK_NINO": "nino",
    "ES_NIF": "es_nif",
    "ES_NIE": "es_nif",
    "IP_ADDRESS": "ip",
    "PHONE_NUMBER": "phone",
}
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "CA", "BR", "AU")
MIN_SCORE = 0.4


def offline_suffix_extractor() -> Any:
    """A tldextract that only uses the suffix list snapshot in the package (no fetch, no cache dir)."""
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


@lru_cache(maxsize=1)
def analyzer() -> AnalyzerEngine:
    """The Presidio analyzer, built once: pattern recognizers only, offline email validation."""
    try:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer import predefined_recognizers as pr
        from presidio_analyzer.nlp_engine import NoOpNlpEngine
    except ImportError:
        raise ConfigError(
            "pii_engine: presidio needs presidio-analyzer", hint="pip install 'corral[guard]'"
        ) from None

    extract = offline_suffix_extractor()

    class OfflineEmailRecognizer(pr.EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        OfflineEmailRecognizer(),
        pr.IbanRecognizer(),
        pr.CreditCardRecognizer(),
        pr.UsSsnRecognizer(),
        pr.UkNinoRecognizer(),
        pr.EsNifRecognizer(supported_language="en"),
        pr.EsNieRecognizer(supported_language="en"),
        pr.IpRecognizer(),
        pr.PhoneRecognizer(supported_regions=PHONE_REGIONS),
    ):
        registry.add_recognizer(recognizer)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    engine.load()
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def _e164_shaped(candidate: str) -> bool:
    """At most 15 digits (E.164), at least 8, and not a bare run of digits without a `+`."""
    digits = sum(c.isdigit() for c in candidate)
    return 8 <= digits <= 15 and not (candidate.isdigit() and not candidate.startswith("0"))


def find_pii_presidio(text: str, kinds: tuple[str, ...] = KINDS) -> list[PIIFinding]:
    """Non-overlapping PII spans found by Presidio, best score first on overlap, in text order."""
    entities = [entity for entity, kind in ENTITY_KINDS.items() if kind in kinds]
    results = analyzer().analyze(text, language="en", entities=entities, score_threshold=MIN_SCORE)
    chosen: list[PIIFinding] = []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if any(r.start < f.end and f.start < r.end for f in chosen):
            continue
        if r.entity_type == "PHONE_NUMBER" and not _e164_shaped(text[r.start : r.end]):
            continue
        chosen.append(PIIFinding(ENTITY_KINDS[r.entity_type], r.start, r.end, text[r.start : r.end]))
    return sorted(chosen, key=lambda f: f.start)


def anonymize_presidio(text: str, findings: list[PIIFinding]) -> str:
    """Presidio's anonymizer replacing each finding by `[KIND]` (the fast path's placeholders)."""
    from presidio_anonymizer import AnonymizerEngine
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    results = [RecognizerResult(f.kind, f.start, f.end, 1.0) for f in findings]
    operators = {f.kind: OperatorConfig("replace", {"new_value": f"[{f.kind.upper()}]"}) for f in findings}
    return str(AnonymizerEngine().anonymize(text, results, operators).text)
