"""Feedback cannot be forged (#16 item 5) and is strictly typed (#17 item 4)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from corral.errors import InvalidInputError
from corral.gateway.feedback import parse_feedback
from corral.gateway.http import new_trace_id

TRACE = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "body",
    [
        {"trace_id": "abc", "score": 1},
        {"trace_id": TRACE, "score": True},
        {"trace_id": TRACE, "score": 1, "thumbs": "down"},
        {"trace_id": TRACE},
        {"trace_id": TRACE, "thumbs": "sideways"},
        {"trace_id": TRACE, "score": 1.5},
        {"trace_id": TRACE, "score": 1, "comment": "x" * 5000},
        {"trace_id": TRACE, "score": 1, "label": 7},
        {"trace_id": TRACE, "score": 0, "correction": 7},
        {"trace_id": TRACE, "score": 0, "correction": "  "},
    ],
)
def test_feedback_bodies_are_strict(body):
    with pytest.raises(InvalidInputError):
        parse_feedback(body)


def test_one_score_field_each_way():
    assert parse_feedback({"trace_id": TRACE, "thumbs": "down"}).score == 0.0
    assert parse_feedback({"trace_id": TRACE, "score": 1}).score == 1.0


def test_a_correction_is_bounded_and_the_error_says_how_long_it_may_be():
    assert parse_feedback({"trace_id": TRACE, "score": 0, "correction": "Go to Orders."}).correction == (
        "Go to Orders."
    )
    with pytest.raises(InvalidInputError, match="at most 16384"):
        parse_feedback({"trace_id": TRACE, "score": 0, "correction": "x" * 16_385})


def _key(api: httpx.Client, name: str, **extra: object) -> str:
    return str(api.post("/admin/keys", json={"name": name, **extra}).json()["key"])


def test_feedback_only_from_the_key_that_made_the_trace_on_traces_that_exist(gateway, fake, h):
    settings = h.settings({"m": {"routes": [h.url_route(fake)]}, "n": {"routes": [h.url_route(fake)]}})
    with gateway(settings) as gw, h.admin(gw) as api:
        alice, bob = _key(api, "alice", rpm=7), _key(api, "bob")
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        def post(key: str, path: str, body: dict) -> httpx.Response:  # type: ignore[type-arg]
            return httpx.post(f"{gw.base_url}{path}", json=body, headers={"Authorization": f"Bearer {key}"})

        answer = post(alice, "/v1/chat/completions", chat)
        trace = answer.headers["x-corral-trace-id"]
        assert re.fullmatch("[0-9a-f]{32}", trace)
        other = post(alice, "/v1/chat/completions", chat).headers["x-corral-trace-id"]
        assert trace[:16] != other[:16]  # random, not a prefix and a counter
        assert post(bob, "/v1/feedback", {"trace_id": trace, "score": 0}).status_code == 404
        for unknown in ("ab" * 16, "0" * 32):
            assert post(alice, "/v1/feedback", {"trace_id": unknown, "score": 0}).status_code == 404
        # the trace may not be stored yet: this process knows who made it
        assert post(alice, "/v1/feedback", {"trace_id": trace, "thumbs": "up"}).status_code == 200
        assert gw.gateway.flush_traces()
        gw.gateway.tracer.recent._owners.clear()  # as on another replica: the stored trace decides
        assert post(bob, "/v1/feedback", {"trace_id": trace, "score": 0}).status_code == 404
        assert post(alice, "/v1/feedback", {"trace_id": trace, "score": 0.5}).status_code == 200
        assert api.post("/v1/feedback", json={"trace_id": trace, "score": 1}).status_code == 200  # admin
        statuses = [
            post(alice, "/v1/feedback", {"trace_id": trace, "score": 1}).status_code for _ in range(5)
        ]
        assert 429 in statuses  # feedback counts against the key's RPM


def test_trace_ids_sort_by_time_and_cannot_be_guessed_from_a_neighbour() -> None:
    ids = [new_trace_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids) and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time() * 1000) < 60_000
    tails = [int(i[12:], 16) for i in ids]  # 80 random bits: neighbours share nothing
    assert len(set(tails)) == len(tails)
    assert sum(bin(a ^ b).count("1") for a, b in zip(tails, tails[1:], strict=False)) / len(tails) > 30
