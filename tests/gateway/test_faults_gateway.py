"""The gateway under faults and attack (#16): each test reproduces one failure found by probing it."""

from __future__ import annotations

import time

import httpx
import pytest


def test_a_cancelled_half_open_probe_does_not_leave_the_breaker_open(gateway, fake, h):
    fake.configure(fault="hang")
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake, timeout_s=0.5)]}},
        gateway={"breaker_failures": 2, "breaker_reset_s": 2.0},
    )
    with gateway(settings) as gw, h.admin(gw) as api:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        statuses = [api.post("/v1/chat/completions", json=body).status_code for _ in range(3)]
        assert statuses[0] == 502 and statuses[-1] == 503  # timeouts opened the breaker
        time.sleep(2.1)
        with pytest.raises(httpx.TimeoutException):  # the probe's client gives up: the probe is cancelled
            api.post("/v1/chat/completions", json=body, timeout=0.3)
        fake.configure(fault="none")
        time.sleep(0.2)
        answer = api.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
