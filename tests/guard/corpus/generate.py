"""Writes pii.jsonl: the labelled PII corpus both engines are scored on (seeded, so reruns give the same file).

Each line is {"text": ..., "spans": [[start, end, kind], ...]}; the values are synthetic but
valid (checksums computed), and the near misses (bad checksums, order numbers, dates, versions)
are unlabelled so that a detector flagging them loses precision.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

R = random.Random(12)
NIF = "TRWAGMYFPDXBNJZSQVHLCKE"


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(str(R.randrange(10)) for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        digits = body + check
        total = sum(
            (int(c) * 2 - 9 if int(c) * 2 > 9 else int(c) * 2) if i % 2 else int(c)
            for i, c in enumerate(reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError


def group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    return sep.join(out)


def card() -> str:
    kind = R.choice(["visa", "mc", "amex"])
    if kind == "amex":
        return group(luhn_complete(R.choice(["34", "37"]), 15), [4, 6, 5], R.choice([" ", "-", ""]))
    digits = luhn_complete("4" if kind == "visa" else str(R.randint(51, 55)), 16)
    return group(digits, [4, 4, 4, 4], R.choice([" ", "-", ""]))


def bad_card() -> str:
    good = luhn_complete("4", 16)
    return group(good[:-1] + str((int(good[-1]) + 3) % 10), [4, 4, 4, 4], " ")


IBAN_BBAN = {"GB": "ABCD" + "0" * 14, "DE": "0" * 18, "FR": "0" * 23, "ES": "0" * 20, "NL": "ABNA" + "0" * 10}


def iban(valid: bool = True) -> str:
    country = R.choice(list(IBAN_BBAN))
    bban = "".join(
        R.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") if c.isalpha() else str(R.randrange(10))
        for c in IBAN_BBAN[country]
    )
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    check = 98 - number % 97
    if not valid:
        check = (check + 7) % 97 or 11
    s = f"{country}{check:02d}{bban}"
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4)) if R.random() < 0.5 else s


def ssn() -> str:
    area = R.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"


def nino() -> str:
    first = R.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = R.choice("ABCEGHJKLMNPRSTWXYZ")
    while first + second in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}:
        second = R.choice("ABCEGHJKLMNPRSTWXYZ")
    digits = "".join(str(R.randrange(10)) for _ in range(6))
    return f"{first}{second}{digits}{R.choice('ABCD')}"


def nif() -> str:
    if R.random() < 0.7:
        number = R.randint(10_000_000, 99_999_999)
        return f"{number}{NIF[number % 23]}"
    prefix = R.choice("XYZ")
    rest = R.randint(1_000_000, 9_999_999)
    return f"{prefix}{rest:07d}{NIF[int('XYZ'.index(prefix).__str__() + f'{rest:07d}') % 23]}"


def ip() -> str:
    if R.random() < 0.7:
        return ".".join(str(R.randint(1, 254)) for _ in range(4))
    return f"2001:db8:{R.randint(1, 0xFFFF):x}::{R.randint(1, 0xFFFF):x}"


def email() -> str:
    user = R.choice(["jane.doe", "m.rossi", "kim+orders", "li_wei", "o.smith42", "support-team"])
    domain = R.choice(
        ["example.com", "mail.example.co.uk", "corp.example.de", "example.org", "uni.example.edu"]
    )
    return f"{user}@{domain}"


PHONES = [
    lambda: f"+1 415-555-{R.randint(1000, 9999)}".replace("555", str(R.randint(201, 989))),
    lambda: f"({R.randint(201, 989)}) {R.randint(201, 989)}-{R.randint(1000, 9999)}",
    lambda: f"+44 20 7946 {R.randint(1000, 9999)}",
    lambda: f"+44 7911 {R.randint(100000, 999999)}",
    lambda: f"+49 30 {R.randint(100000, 999999)}",
    lambda: f"+33 1 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
    lambda: f"06 {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)} {R.randint(10, 99)}",
    lambda: f"+34 91 {R.randint(100, 999)} {R.randint(10, 99)} {R.randint(10, 99)}",
    lambda: f"+39 06 {R.randint(1000, 9999)} {R.randint(1000, 9999)}",
    lambda: f"+31 20 {R.randint(100, 999)} {R.randint(1000, 9999)}",
]


def valid_phone() -> str:
    """A number in one of the formats above that phonenumbers says is valid (real numbering plans)."""
    import phonenumbers

    while True:
        candidate = R.choice(PHONES)()
        region = "FR" if candidate.startswith("06") else "US"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
            return candidate


MAKERS = {
    "email": email,
    "card": card,
    "iban": iban,
    "ssn": ssn,
    "nino": nino,
    "es_nif": nif,
    "ip": ip,
    "phone": lambda: valid_phone(),
}
TEMPLATES = {
    "email": ["Please reply to {} when you can.", "My address is {}, thanks!", "cc {} on the ticket"],
    "card": ["Charge my card {} for the order.", "card number: {} exp 09/29", "I paid with {} yesterday"],
    "iban": ["Send the refund to {} please.", "IBAN {} (current account)", "wire it to {}"],
    "ssn": ["My SSN is {} for the form.", "social security {}", "applicant ssn: {}"],
    "nino": ["NI number {} for payroll", "my national insurance number is {}", "NINO: {}"],
    "es_nif": ["Mi DNI es {} gracias", "NIF {} para la factura", "documento {}"],
    "ip": ["The server at {} keeps timing out.", "blocked ip {} after the attack", "ssh to {} fails"],
    "phone": ["Call me on {} after 5pm.", "my mobile is {}", "phone: {} (office)"],
}
DISTRACTORS = [
    lambda: (
        f"Order #{R.randint(100000, 9999999)} shipped on 2024-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}."
    ),
    lambda: f"The total was ${R.randint(10, 999)}.{R.randint(0, 99):02d} including tax.",
    lambda: f"Upgrade to version {R.randint(1, 9)}.{R.randint(0, 20)}.{R.randint(0, 9)} before Friday.",
    lambda: (
        f"Meeting at {R.randint(8, 18)}:{R.choice(['00', '15', '30', '45'])} in room {R.randint(100, 999)}."
    ),
    lambda: f"This card {bad_card()} was declined.",
    lambda: f"Invalid IBAN {iban(valid=False)} was rejected.",
    lambda: f"Tracking code {R.randint(10**11, 10**12 - 1)} is not found.",
    lambda: f"Reference 000-{R.randint(10, 99)}-{R.randint(1000, 9999)} is a test record.",
    lambda: f"We sold {R.randint(1000, 99999)} units in Q{R.randint(1, 4)} {R.randint(2015, 2025)}.",
    lambda: "No personal data in this sentence at all.",
]


def record() -> dict[str, object]:
    text, spans = "", []
    for _ in range(R.randint(1, 3)):
        if R.random() < 0.3:
            text += DISTRACTORS[R.randrange(len(DISTRACTORS))]() + " "
            continue
        kind = R.choice(list(MAKERS))
        value = MAKERS[kind]()
        before, after = R.choice(TEMPLATES[kind]).split("{}")
        start = len(text) + len(before)
        spans.append([start, start + len(value), kind])
        text += before + value + after + " "
    return {"text": text.rstrip(), "spans": spans}


def main() -> None:
    lines = [json.dumps(record()) for _ in range(400)]
    Path(__file__).with_name("pii.jsonl").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
