"""`corral models retire` from another process drains a version a running gateway is still serving."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from corral.registry import drain
from corral.store import Store


def _wait(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _corral(db_url: str, *args: str) -> str:
    env = {**os.environ, "CORRAL_DATABASE_URL": db_url}
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli.main", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _reported(store: Store) -> list[dict[str, int]]:
    with store.session() as session:
        return [beat.in_flight for beat in drain.beats(session)]


def test_retire_from_another_process_waits_for_the_request_in_flight(gateway, fake, fake_b, h, db_url):
    fake.configure(tokens=600, token_delay_s=0.1)  # a stream that lasts until the test speeds it up
    store = Store(db_url, auto_upgrade=True)
    settings = h.settings({"support": {"routes": [{"target": "support@production"}]}})
    with gateway(settings, store=store) as gw:
        reg = gw.gateway.registry
        reg.models.register("support", endpoint=fake.url, upstream_model="fake-model")
        reg.models.register("support", endpoint=fake_b.url, upstream_model="fake-model")
        reg.models.set_alias("support", "production", 1)
        assert _wait(lambda: "support" in gw.gateway.live and gw.gateway.live["support"].routes[0], 2.5)
        answers: list[str] = []
        c = h.client(gw)

        def stream() -> None:
            chunks = h.chat(c, model="support", stream=True)
            answers.append("".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices))

        slow = threading.Thread(target=stream)
        slow.start()
        assert _wait(lambda: fake.count == 1, 2.0)
        reg.models.set_alias("support", "production", 2)
        assert _wait(lambda: _reported(store) == [{"support@1": 1}], 3.0)  # this replica's heartbeat
        out = _corral(db_url, "models", "retire", "support@1", "--purge")
        assert "support@1 is draining" in out and "once they finish" in out
        assert reg.models.resolve("support@1").stage == "draining"
        assert not answers and gw.gateway.version_in_flight["support@1"] == 1
        fake.configure(token_delay_s=0)
        slow.join(20)
        assert answers and answers[0].startswith("a")  # the request finished on the version it started on
        assert _wait(lambda: reg.models.resolve("support@1").stage == "retired", 3.0)
    # with no gateway alive, another process retires at once
    reg.models.register("support", endpoint=fake.url, upstream_model="fake-model")
    reg.models.set_alias("support", "production", 3)
    assert "support@2 is retired" in _corral(db_url, "models", "retire", "support@2")
    store.dispose()
