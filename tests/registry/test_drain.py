"""Draining across processes: the decision, and a purge asked for at retire carried out on completion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.registry.drain import Beat, drained
from corral.store.models import GatewayHeartbeatRow, utcnow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SINCE = NOW - timedelta(seconds=2)


def _beat(counts: dict[str, int], age_s: float = 0.5, ttl_s: float = 5.0) -> Beat:
    at = NOW - timedelta(seconds=age_s)
    return Beat(at, at + timedelta(seconds=ttl_s), counts)


def test_drained_when_no_gateway_is_alive():
    assert drained("m@1", 0, [], SINCE, NOW)
    assert drained("m@1", 0, [_beat({"m@1": 3}, age_s=10)], SINCE, NOW)  # that replica is gone


def test_not_drained_while_this_process_or_any_live_replica_has_it_in_flight():
    assert not drained("m@1", 1, [], SINCE, NOW)
    assert not drained("m@1", 0, [_beat({}), _beat({"m@1": 1})], SINCE, NOW)
    assert drained("m@1", 0, [_beat({"m@2": 4}), _beat({})], SINCE, NOW)


def test_a_live_replica_must_report_after_draining_began():
    assert not drained("m@1", 0, [_beat({}, age_s=3)], SINCE, NOW)
    assert drained("m@1", 0, [_beat({}, age_s=1)], SINCE, NOW)


def _heartbeat(registry, counts: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    with registry.store.session() as session:
        session.merge(
            GatewayHeartbeatRow(
                replica="r1", in_flight=counts, at=now, expires_at=now + timedelta(seconds=60)
            )
        )


def test_retire_while_a_replica_serves_it_drains_and_keeps_the_requested_purge(registry, model_dir):
    registry.models.register("support", model_dir("a"))
    registry.models.register("support", model_dir("b"))
    _heartbeat(registry, {"support@1": 2})
    draining = registry.models.retire("support@1", purge=True)
    assert (draining.stage, draining.purge_requested, draining.artifact_purged) == ("draining", True, False)
    assert registry.artifacts.exists(draining.artifact)
    assert registry.models.complete_retirement("support@1").stage == "draining"  # still reported in flight
    _heartbeat(registry, {})
    done = registry.models.complete_retirement(
        "support@1"
    )  # as the gateway's watcher calls it: no purge flag
    assert done.stage == "retired" and done.artifact_purged
    assert not registry.artifacts.exists(draining.artifact)
