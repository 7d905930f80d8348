"""The shared PII redactor: what it catches, and the numbers it must leave alone."""

from __future__ import annotations

import pytest

from corral.guard import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+cx@example.co.uk today", "write to [EMAIL] today"),
        ("call +1 (555) 123-4567 now", "call [PHONE] now"),
        ("or 06 12 34 56 78", "or [PHONE]"),
        ("card 4111 1111 1111 1111 please", "card [CARD] please"),
        ("iban GB82 WEST 1234 5698 7654 32", "iban [IBAN]"),
        ("from 192.168.1.20 and 2001:db8::1:0:0:1", "from [IP] and 2001:db8::1:0:0:1"),
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
