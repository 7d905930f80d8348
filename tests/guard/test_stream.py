"""Output checks on streamed answers: redacted as a whole answer would be, whatever the chunking, with a
bounded hold-back; a blocking check stops before the phrase is out."""

from __future__ import annotations

import pytest

from corral.config.sections import GuardPolicy
from corral.guard.policy import check_input, check_output
from corral.guard.stream import MAX_HOLD, WINDOW, StreamScreen, screens

DEFAULT = GuardPolicy(pii="redact", secrets="block", moderation="flag", injection="flag")
ANSWER = (
    "Sure. Write to jane.doe@example.org or call +44 20 7946 0958; the card 4111 1111 1111 1111 "
    "and key ghp_" + "a" * 36 + " were in the log, with https://bob:hunter2@db.example.com/x. Done."
)


def _stream(screen: StreamScreen, text: str, size: int) -> tuple[str, list[int]]:
    """The text as sent, and how much was held back after each piece."""
    out, held = [], []
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    for i, piece in enumerate(pieces):
        out.append(screen.feed(piece, final=i == len(pieces) - 1))
        held.append(len(screen.pending))
    return "".join(out), held


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 1000])
def test_a_streamed_answer_is_redacted_exactly_as_the_whole_answer(size):
    whole = check_output(ANSWER, DEFAULT).texts[0]
    assert "[EMAIL]" in whole and "[SECRET]" in whole and "[CARD]" in whole and "[PHONE]" in whole
    sent, held = _stream(StreamScreen(DEFAULT), ANSWER, size)
    assert sent == whole
    assert max(held) <= 2 * WINDOW + size  # the window, or a span crossing it held from its start
    assert "jane" not in sent and "hunter2" not in sent and "4111" not in sent


def test_verdicts_name_the_kinds_redacted_and_flag_the_rest():
    screen = StreamScreen(DEFAULT)
    _stream(screen, ANSWER + " How do I make a pipe bomb?", 4)
    verdicts = {v.check: v for v in screen.verdicts()}
    assert verdicts["pii"].action == "redact" and set(verdicts["pii"].found) == {"card", "email", "phone"}
    assert verdicts["secrets"].action == "redact"
    assert set(verdicts["secrets"].found) == {"github_token", "url_password"}
    assert verdicts["moderation"].action == "flag"


def test_plain_prose_goes_out_word_by_word():
    screen = StreamScreen(DEFAULT)
    sent = [screen.feed(w) for w in ("Hello ", "there, ", "how ", "are ", "you?")]
    assert sent == ["Hello ", "there, ", "how ", "are ", ""]
    assert screen.feed("", final=True) == "you?"


def test_a_blocking_moderation_check_stops_before_the_phrase_is_out():
    policy = GuardPolicy(moderation="block")
    screen = StreamScreen(policy)
    text = "Fine. Here is how to make a pipe bomb at home: first"
    sent = ""
    for ch in text:
        sent += screen.feed(ch)
        if screen.blocked:
            break
    assert screen.blocked is not None and screen.blocked.check == "moderation"
    assert "bomb" not in sent and sent.startswith("Fine.")
    assert screen.feed(" more") == ""


def test_a_last_word_still_growing_does_not_block():
    screen = StreamScreen(GuardPolicy(moderation="block"))
    sent = "".join(screen.feed(p) for p in ("I want to di", "et, not to starve"))
    sent += screen.feed("", final=True)
    assert screen.blocked is None and sent == "I want to diet, not to starve"


def test_pseudonyms_are_restored_after_the_screen():
    policy = GuardPolicy(pii="pseudonymize", secrets="redact")
    pseudonyms = check_input(["mail jane@example.org"], policy).pseudonyms
    screen = StreamScreen(policy, pseudonyms)
    sent, _ = _stream(screen, "Noted: [EMAIL_1], key sk-" + "x" * 30 + " end", 3)
    assert sent == "Noted: jane@example.org, key [SECRET] end"


def test_a_span_growing_past_the_limit_is_released_redacted_and_the_rest_dropped():
    screen = StreamScreen(GuardPolicy(secrets="redact"), limit=200)
    key = "-----BEGIN RSA PRIVATE KEY-----\n" + "QUJD" * 150 + "\n-----END RSA PRIVATE KEY-----"
    sent, held = _stream(screen, "here: " + key + " and after", 16)
    assert sent == "here: [SECRET] and after"
    assert max(held) <= 200 + 2 * 16


def test_the_hold_back_is_bounded_by_max_hold():
    screen = StreamScreen(GuardPolicy(secrets="redact"))
    _, held = _stream(screen, "sk-" + "a" * (MAX_HOLD * 2), 100)
    assert max(held) <= MAX_HOLD + 100


def test_policies_without_redaction_or_blocking_hold_nothing_back():
    assert not screens(GuardPolicy(pii="flag", secrets="flag", moderation="flag"))
    assert screens(DEFAULT) and screens(GuardPolicy(moderation="block"))
    screen = StreamScreen(GuardPolicy(pii="flag"))
    assert screen.feed("jane@exa") == "jane@exa"


def test_every_corpus_text_streamed_in_random_pieces_matches_the_whole_answer():
    import json
    import random
    from pathlib import Path

    corpus = Path(__file__).parent / "corpus"
    texts = [
        json.loads(line)["text"] for name in ("pii.jsonl", "secrets.jsonl") for line in (corpus / name).open()
    ]
    rng = random.Random(12)
    for text in texts:
        screen, sent, i = StreamScreen(DEFAULT), [], 0
        while i < len(text):
            n = rng.randint(1, 12)
            sent.append(screen.feed(text[i : i + n], final=i + n >= len(text)))
            i += n
        assert "".join(sent) == check_output(text, DEFAULT).texts[0], text


def test_a_long_held_span_is_not_rescanned_at_every_piece(monkeypatch):
    import corral.guard.stream as stream

    calls = []
    real = stream.find_secrets
    monkeypatch.setattr(stream, "find_secrets", lambda text: calls.append(len(text)) or real(text))
    screen = StreamScreen(GuardPolicy(secrets="redact"))
    sent, _ = _stream(screen, "key sk-" + "a" * 3000 + " end", 1)
    assert sent == "key [SECRET] end"
    assert len(calls) < 3000 // 10 and sum(calls) < 3000 * 3000 // 20  # not once per character
