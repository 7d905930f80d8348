"""Leases: one holder at a time, renewal by the holder, take-over once expired, on both stores."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from corral.store.lease import Lease


def test_one_holder_at_a_time_until_the_lease_expires(store):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    a, b = Lease(store, "job", ttl_s=30, holder="a"), Lease(store, "job", ttl_s=30, holder="b")
    assert a.acquire(now)
    assert not b.acquire(now + timedelta(seconds=10))
    assert a.acquire(now + timedelta(seconds=20))  # renewed: now good until +50 s
    assert not b.acquire(now + timedelta(seconds=45))
    assert b.acquire(now + timedelta(seconds=51))
    assert b.holder_now() == "b"
    assert not a.acquire(now + timedelta(seconds=52))
    a.release()  # not a's any more: nothing happens
    assert b.holder_now() == "b"
    b.release()
    assert b.holder_now() is None
    assert a.acquire(now + timedelta(seconds=53))


def test_racing_replicas_elect_exactly_one(store):
    store.ensure_ready()
    leases = [Lease(store, "race", ttl_s=60, holder=f"r{i}") for i in range(6)]
    won: list[str] = []
    barrier = threading.Barrier(len(leases))

    def go(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire():
            won.append(lease.holder)

    threads = [threading.Thread(target=go, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
