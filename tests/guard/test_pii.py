"""The shared PII redactor: what it catches, and the numbers it must leave alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.guard import redact
from corral.guard.pii import KINDS, find_pii
from corral.guard.scoring import load_corpus, score

CORPUS = Path(__file__).parent / "corpus" / "pii.jsonl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+cx@example.co.uk today", "write to [EMAIL] today"),
        ("call +1 (555) 123-4567 now", "call [PHONE] now"),
        ("or 06 12 34 56 78", "or [PHONE]"),
        ("card 4111 1111 1111 1111 please", "card [CARD] please"),
        ("iban GB82 WEST 1234 5698 7654 32", "iban [IBAN]"),
        ("from 192.168.1.20 and 2001:db8::1:0:0:1", "from [IP] and [IP]"),
        ("ssn 123-45-6789", "ssn [SSN]"),
    ],
)
def test_redact_replaces_pii_with_typed_placeholders(text, expected):
    assert redact(text).text == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 1042 costs 19.99",
        "card 4111 1111 1111 1112 fails the Luhn check",
        "order 123456789 is a plain number",
        "on 2024-01-15 at 10:30",
        "version 999.1.1.1 is not an address",
        "GB00WEST12345698765432 fails mod 97",
    ],
)
def test_redact_leaves_order_numbers_dates_and_bad_checksums(text):
    assert redact(text).text == text


def test_redaction_reports_each_finding():
    result = redact("a@b.io and c@d.io, card 5555 5555 5555 4444")
    assert [f.kind for f in result.findings] == ["email", "email", "card"]
    assert result.kinds == {"email", "card"}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("amex 3714 496353 98431", "card"),
        ("mc 5555-5555-5555-4444", "card"),
        ("DE89 3704 0044 0532 0130 00", "iban"),
        ("FR1420041010050500013M02606", "iban"),
        ("ssn 536-22-8791", "ssn"),
        ("NINO AB 12 34 56 C", "nino"),
        ("DNI 12345678Z", "es_nif"),
        ("NIE X1234567L", "es_nif"),
        ("host 10.0.0.255", "ip"),
        ("v6 fe80::1ff:fe23:4567:890a", "ip"),
        ("+33 1 42 68 53 00", "phone"),
        ("+49 30 901820", "phone"),
        ("+1 415-555-0132", "phone"),
    ],
)
def test_each_recognizer_finds_its_kind(text, kind):
    assert [f.kind for f in find_pii(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "amex 3714 496353 98432",  # Luhn fails
        "DE89 3704 0044 0532 0130 01",  # mod 97 fails
        "ssn 000-22-8791 and 666-22-8791 and 900-22-8791",  # areas never issued
        "NINO BG 12 34 56 C and QQ123456C",  # prefixes never used
        "DNI 12345678A",  # wrong control letter
        "ip 256.1.1.1 or 1.2.3",
        "call 123456789",  # a bare run of digits
        "build 4.12.9.1770 shipped",
    ],
)
def test_near_misses_are_not_pii(text):
    assert find_pii(text) == []


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown PII kinds"):
        find_pii("x", ["passport"])


def test_fast_path_on_the_shared_corpus_reaches_the_floor():
    corpus = load_corpus(CORPUS)
    scores = score(corpus, find_pii)
    assert set(scores) == set(KINDS)
    for s in scores.values():
        assert s.recall >= 0.95 and s.precision >= 0.9, s


def test_the_ipv4_fast_check_agrees_with_ipaddress():
    import ipaddress
    import random

    from corral.guard.pii import _ip_ok

    def reference(candidate: str) -> bool:
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return False
        return True

    rng = random.Random(1)
    octets = ["0", "1", "9", "10", "99", "100", "255", "256", "999", "00", "01", "007", "\u0661"]
    cases = [".".join(rng.choice(octets) for _ in range(4)) for _ in range(2000)]
    assert all(_ip_ok(c) == reference(c) for c in [*cases, "1.2.3", "1.2.3.4.5", "1..2.3", "::1"])
