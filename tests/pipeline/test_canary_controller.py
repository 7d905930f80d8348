"""The canary controller on a real store: simulated users arrive while it sleeps, routed as the gateway would."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import func, select

from corral.config import Deployment, MonitorSettings, Route
from corral.errors import ConflictError, NotFoundError
from corral.gateway.deployments import DeploymentStore
from corral.gateway.routing import choose_route
from corral.monitor.dashboard import pages
from corral.monitor.dashboard.app import Dashboard
from corral.pipeline.canary import CanarySpec, Margins, arm_stats, latest_decisions, run_canary
from corral.store.models import AuditRow, DeploymentRow, GatewayHeartbeatRow, utcnow
from corral.testing.traffic import insert_feedback, insert_traces, trace_row

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SPEC = CanarySpec(
    steps=(10, 50, 100),
    check_interval_s=60,
    min_samples=100,
    max_duration_s=3 * 3600,
    margins=Margins(error_rate=0.05, latency_p95=0.1, feedback=0.2),
    drain_timeout_s=30,
)
USERS = [f"u{i}" for i in range(300)]


class Traffic:
    """A fake clock whose `sleep` lets simulated users send requests, split as the stored deployment says."""

    def __init__(self, store: Any, quality: dict[str, dict[str, float]], per_minute: int = 300) -> None:
        self.store, self.quality, self.per_minute = store, quality, per_minute
        self.now = T0.timestamp()
        self.rng = random.Random(7)
        self.shares: list[float] = []  # the candidate's share each time the controller slept
        self.count = 0

    def clock(self) -> float:
        return self.now

    def requests(
        self, start: datetime, seconds: float, routes: list[str], weights: list[float], mode: str
    ) -> None:
        traces, feedback = [], []
        n = int(self.per_minute * seconds / 60)
        for i in range(n):
            user = self.rng.choice(USERS)
            version = routes[choose_route(weights, mode, sticky_key=user, rand=self.rng.random())]
            q = self.quality[version]
            at = start + timedelta(seconds=seconds * (i + 1) / (n + 1))
            self.count += 1
            tid = f"t{self.count:031d}"
            status = 500 if self.rng.random() < q["errors"] else 200
            latency = self.rng.lognormvariate(5, 0.3) * q.get("slower", 1.0)
            traces.append(trace_row(tid, at, "support", prompt="hi", version=version, route=version,
                                    status=status, latency_ms=latency, user=user))  # fmt: skip
            if status == 200 and self.rng.random() < 0.6:
                score = 1.0 if self.rng.random() < q["thumbs_up"] else 0.0
                feedback.append({"id": f"f{self.count:031d}", "trace_id": tid, "score": score,
                                 "at": at + timedelta(seconds=1)})  # fmt: skip
        insert_traces(self.store, traces)
        if feedback:
            insert_feedback(self.store, feedback)

    def sleep(self, seconds: float) -> None:
        spec = DeploymentStore(self.store).specs()["support"]
        routes = [str(r.target).replace("@production", "@1") for r in spec.routes]
        weights = [r.weight for r in spec.routes]
        self.shares.append(weights[1] if spec.mode == "canary" else 0.0)
        self.requests(datetime.fromtimestamp(self.now, UTC), seconds, routes, weights, spec.mode)
        self.now += seconds


@pytest.fixture
def setup(registry):  # type: ignore[no-untyped-def]
    models = registry.models
    models.register("support", endpoint="http://127.0.0.1:9/v1", upstream_model="one")
    models.register("support", endpoint="http://127.0.0.1:9/v1", upstream_model="two")
    models.set_alias("support", "production", 1)
    models.set_alias("support", "staging", 2)
    DeploymentStore(registry.store).seed({"support": Deployment(routes=[Route(target="support@production")])})
    return registry


GOOD = {"errors": 0.01, "thumbs_up": 0.8}


def _stored(store: Any) -> tuple[dict[str, Any], str]:
    with store.session() as session:
        row = session.scalar(select(DeploymentRow).where(DeploymentRow.name == "support"))
        return row.spec, row.source


def test_a_good_candidate_steps_up_is_promoted_and_the_old_version_drains_and_retires(setup):  # type: ignore[no-untyped-def]
    registry = setup
    traffic = Traffic(registry.store, {"support@1": GOOD, "support@2": GOOD})
    traffic.requests(T0 - timedelta(minutes=30), 1800, ["support@1"], [1.0], "weighted")  # before the canary
    original = _stored(registry.store)
    seen: list[dict[str, Any]] = []
    result = run_canary(registry, deployment="support", model="support", candidate=2, production=1, spec=SPEC,
                        sleep=traffic.sleep, clock=traffic.clock, on_decision=seen.append)  # fmt: skip
    assert result.outcome == "promoted"
    assert result.old_version_stage == "retired"  # no gateway replica alive: nothing in flight
    assert [d["action"] for d in seen] == [d["action"] for d in result.decisions]
    assert seen[0]["action"] == "start" and seen[-1]["action"] == "promote"
    shares = [s for s in traffic.shares if s]
    assert shares[0] == 10 and shares == sorted(shares) and len(set(shares)) >= 2  # the steps, in the store
    assert registry.models.resolve("support@production").version == 2
    assert "staging" not in registry.models.resolve("support@2").aliases
    assert registry.models.resolve("support@1").stage == "retired"
    assert _stored(registry.store) == original  # one route to support@production again, seeded from the file
    promote = seen[-1]["numbers"]
    assert promote["latency_threshold_source"] == "baseline"
    assert all(m["harm_upper"] < m["margin"] for m in promote["metrics"].values())
    shown = latest_decisions(registry.store, "support")
    assert shown[0]["action"] == "canary.promote" and shown[-1]["action"] == "canary.start"

    def no_sleep(seconds: float) -> None:
        raise AssertionError("a finished canary ran again")

    again = run_canary(registry, deployment="support", model="support", candidate=2, production=1, spec=SPEC,
                       sleep=no_sleep, clock=traffic.clock)  # fmt: skip
    assert (again.outcome, again.old_version_stage) == ("promoted", "retired")  # a resumed pipeline's re-run
    assert [d["action"] for d in again.decisions] == [d["action"] for d in result.decisions]
    assert len(latest_decisions(registry.store, "support", limit=1000)) == len(result.decisions)


def test_a_harmful_candidate_is_rolled_back_at_its_first_share_and_production_is_untouched(setup):  # type: ignore[no-untyped-def]
    registry = setup
    traffic = Traffic(registry.store, {"support@1": GOOD, "support@2": {"errors": 0.4, "thumbs_up": 0.3}})
    original = _stored(registry.store)
    result = run_canary(registry.store, deployment="support", model="support", candidate=2, production=1,
                        spec=SPEC, sleep=traffic.sleep, clock=traffic.clock)  # fmt: skip
    assert result.outcome == "rolled_back"
    assert result.decisions[-1]["action"] == "rollback"
    assert any("error_rate" in r for r in result.decisions[-1]["reasons"])
    assert set(traffic.shares) == {10.0}  # never past the first step
    assert _stored(registry.store) == original
    assert registry.models.resolve("support@production").version == 1
    assert registry.models.resolve("support@1").stage == "production"
    assert registry.models.resolve("support@2").aliases == []  # staging cleared
    with registry.store.session() as session:
        actions = session.scalars(
            select(AuditRow.action).where(AuditRow.subject == "deployment:support")
        ).all()
    assert actions[0] == "canary.start" and actions[-1] == "canary.rollback"
    page = _deployment_page(registry.store)
    assert '<table id="canary">' in page
    fresh = run_canary(registry.store, deployment="support", model="support", candidate=2, production=1,
                       spec=SPEC, sleep=traffic.sleep, clock=traffic.clock, replay_finished=False)  # fmt: skip
    assert fresh.outcome == "rolled_back" and fresh.decisions[0]["action"] == "start"  # a second canary
    assert '<table id="canary">' in page and 'data-action="canary.rollback"' in page and "error_rate" in page


def _deployment_page(store: Any) -> str:
    """The dashboard's deployment page as the gateway renders it."""
    # the dashboard reads only the admin key's hash from the key ring (its sessions end when it changes)
    keys = SimpleNamespace(admin_hash=None)
    dashboard = Dashboard(store, keys=keys, settings=MonitorSettings())  # type: ignore[arg-type]
    context = pages.deployment(store, "support", datetime.now(UTC), 24 * 400, "d")
    return dashboard._render("deployment.html", **context).decode()


def test_live_arm_stats_during_a_canary_and_a_killed_controller_resumes_where_it_was(setup):  # type: ignore[no-untyped-def]
    registry = setup
    traffic = Traffic(registry.store, {"support@1": GOOD, "support@2": GOOD})

    class Killed(Exception):
        pass

    def kill_after_advance(decision: dict[str, Any]) -> None:
        if decision["action"] == "advance":
            raise Killed

    with pytest.raises(Killed):
        run_canary(registry, deployment="support", model="support", candidate=2, production=1, spec=SPEC,
                   sleep=traffic.sleep, clock=traffic.clock, on_decision=kill_after_advance)  # fmt: skip
    live = arm_stats(registry.store, "support", T0)
    assert set(live) == {"production", "candidate"}
    assert live["candidate"].version == "support@2" and live["candidate"].requests > 0
    assert live["production"].requests > live["candidate"].requests
    result = run_canary(registry, deployment="support", model="support", candidate=2, production=1, spec=SPEC,
                        sleep=traffic.sleep, clock=traffic.clock)  # fmt: skip
    assert result.outcome == "promoted"
    assert result.decisions[0]["step_index"] == 1  # resumed at the step it had reached, not from the start
    assert result.decisions[0]["numbers"]["elapsed_s"] > SPEC.check_interval_s
    with registry.store.session() as session:
        starts = session.scalars(select(AuditRow).where(AuditRow.action == "canary.start")).all()
    assert len(starts) == 1


def test_an_old_version_still_in_flight_on_a_live_replica_is_left_draining_for_the_gateway(setup):  # type: ignore[no-untyped-def]
    registry = setup
    now = utcnow()
    with registry.store.session() as session:
        session.add(GatewayHeartbeatRow(replica="r1", in_flight={"support@1": 1}, at=now,
                                        expires_at=now + timedelta(hours=1)))  # fmt: skip
    traffic = Traffic(registry.store, {"support@1": GOOD, "support@2": GOOD})
    result = run_canary(registry, deployment="support", model="support", candidate=2, production=1, spec=SPEC,
                        sleep=traffic.sleep, clock=traffic.clock)  # fmt: skip
    assert (result.outcome, result.old_version_stage) == ("promoted", "draining")
    assert registry.models.resolve("support@1").stage == "draining"  # the watcher retires it once drained


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"production": 2}, ConflictError, "support@production is version 1, not 2"),
        ({"deployment": "nope"}, NotFoundError, "no deployment 'nope'"),
        ({"routes": 2}, ConflictError, "must have one route to support@production"),
    ],
)
def test_a_canary_that_cannot_start_changes_nothing(setup, change, error, match):  # type: ignore[no-untyped-def]
    registry = setup
    change = dict(change)  # the parameter is shared by the sqlite and postgres runs
    if change.pop("routes", None):
        two = [Route(target="support@production"), Route(target="support@2")]
        DeploymentStore(registry.store).put(
            "support", Deployment(routes=two).model_dump(mode="json"), "admin"
        )
    before = _stored(registry.store)
    args = {"deployment": "support", "model": "support", "candidate": 2, "production": 1, **change}
    with pytest.raises(error, match=match):
        run_canary(registry.store, spec=SPEC, sleep=lambda s: None, clock=lambda: 0.0, **args)
    assert _stored(registry.store) == before
    with registry.store.session() as session:
        assert (
            session.scalar(select(func.count()).select_from(AuditRow).where(AuditRow.action.like("canary.%")))
            == 0
        )
