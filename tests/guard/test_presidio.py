"""Presidio as the thorough PII mode: same kinds and corpus as the fast path, and it never reaches the network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

pytest.importorskip("presidio_analyzer")

from corral.guard.pii import KINDS, find_pii  # noqa: E402
from corral.guard.presidio import anonymize_presidio, find_pii_presidio  # noqa: E402
from corral.guard.scoring import agreement, load_corpus, score, spans_of  # noqa: E402

CORPUS = Path(__file__).parent / "corpus" / "pii.jsonl"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the PII engine tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_presidio_checks_emails_against_the_shipped_suffix_list_offline(no_network):
    from corral.guard import presidio

    presidio.analyzer.cache_clear()
    found = find_pii_presidio("mail jane@example.co.uk or bob@host.invalidtld")
    assert [(f.kind, f.text) for f in found] == [("email", "jane@example.co.uk")]


def test_presidio_and_fast_path_agree_on_the_shared_corpus(no_network):
    corpus = load_corpus(CORPUS)
    scores = score(corpus, find_pii_presidio)
    assert set(scores) == set(KINDS)
    for s in scores.values():
        assert s.recall >= 0.95 and s.precision >= 0.9, s
    fast = [spans_of(find_pii(text)) for text, _ in corpus]
    thorough = [spans_of(find_pii_presidio(text)) for text, _ in corpus]
    assert agreement(fast, thorough) >= 0.95


def test_presidio_anonymizer_writes_the_same_placeholders():
    text = "card 4111 1111 1111 1111, mail a@example.org"
    assert anonymize_presidio(text, find_pii_presidio(text)) == "card [CARD], mail [EMAIL]"
