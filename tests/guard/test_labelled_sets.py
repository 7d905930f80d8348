"""Injection, moderation and secrets on labelled sets: attacks and look-alike benign prompts, rates asserted."""

from __future__ import annotations

import json
from pathlib import Path

from corral.guard.injection import detect_injection
from corral.guard.moderation import moderate
from corral.guard.secrets import find_secrets

CORPUS = Path(__file__).parent / "corpus"


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line.strip()]


def _rates(items: list[tuple[bool, bool]]) -> tuple[float, float]:
    """(detection rate on attacks, false-positive rate on benign) from (is_attack, flagged) pairs."""
    attacks = [flagged for attack, flagged in items if attack]
    benign = [flagged for attack, flagged in items if not attack]
    assert len(attacks) >= 20 and len(benign) >= 20
    return sum(attacks) / len(attacks), sum(benign) / len(benign)


def test_injection_heuristics_catch_attacks_and_spare_look_alikes():
    items = [(d["attack"], detect_injection(d["text"]).detected) for d in _load("injection.jsonl")]
    detection, false_positives = _rates(items)
    assert detection >= 0.9
    assert false_positives <= 0.05


def test_every_injection_family_is_in_the_set():
    families = {f for d in _load("injection.jsonl") for f in detect_injection(d["text"]).families}
    assert families == {
        "instruction_override",
        "role_play_jailbreak",
        "system_prompt_extraction",
        "encoded_payload",
    }


def test_moderation_flags_the_right_category_and_spares_look_alikes():
    items = []
    for d in _load("moderation.jsonl"):
        result = moderate(d["text"])
        hit = result.categories.get(d["category"], False) if d["category"] else result.flagged
        items.append((d["category"] is not None, hit))
    detection, false_positives = _rates(items)
    assert detection >= 0.9
    assert false_positives <= 0.05


def test_secrets_found_and_look_alikes_left():
    items = [(d["secret"], bool(find_secrets(d["text"]))) for d in _load("secrets.jsonl")]
    detection, false_positives = _rates(items)
    assert detection >= 0.95
    assert false_positives <= 0.05


def test_moderation_takes_extra_terms_per_category():
    from corral.guard.moderation import freeze_terms

    extra = freeze_terms({"competitors": [r"acme\s+corp"], "violence": ["smash the servers"]})
    result = moderate("Should we buy from ACME  Corp or smash the servers?", extra)
    assert result.categories["competitors"] and result.categories["violence"]
    assert not moderate("Should we buy from ACME Corp?").flagged
