"""Costs grouped by deployment, model version and route, so a canary's cost sits beside production's."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from corral.cli.main import main
from corral.config import load_settings
from corral.errors import InvalidInputError
from corral.gateway.costs import group_names, totals
from corral.store import Store
from corral.store.models import TraceRow


def add_traces(store: Store, version: str, route: str, n: int, cost: float) -> None:
    now = datetime.now(UTC)
    with store.session() as session:
        for _ in range(n):
            session.add(
                TraceRow(
                    id=uuid.uuid4().hex,
                    at=now,
                    day=now.strftime("%Y-%m-%d"),
                    key_name="app",
                    deployment="support",
                    endpoint="chat",
                    route=route,
                    model_version=version,
                    prompt_tokens=10,
                    completion_tokens=5,
                    cost_usd=cost,
                    status=200,
                )
            )


def test_costs_by_version_set_a_canary_beside_production(store):
    add_traces(store, "support@1", "target:support@production", 9, 0.01)
    add_traces(store, "support@2", "target:support@canary", 1, 0.03)
    rows = totals(store, ["deployment", "version"])
    assert [(r["deployment"], r["version"], r["requests"]) for r in rows] == [
        ("support", "support@1", 9),
        ("support", "support@2", 1),
    ]
    assert [r["cost_usd"] for r in rows] == [pytest.approx(0.09), pytest.approx(0.03)]
    by_route = totals(store, ["route"])
    assert {r["route"] for r in by_route} == {"target:support@production", "target:support@canary"}


def test_group_names_are_checked_and_model_still_means_the_deployment():
    assert group_names("deployment,version,route") == ["deployment", "version", "route"]
    assert group_names(" model , day ") == ["model", "day"]
    with pytest.raises(InvalidInputError, match="cannot group costs by colour.*deployment, version, route"):
        group_names("version,colour")


def test_corral_costs_by_any_combination(capsys):
    store = Store.from_settings(load_settings())
    add_traces(store, "support@1", "target:support@production", 3, 0.01)
    add_traces(store, "support@2", "target:support@canary", 2, 0.02)
    with pytest.raises(SystemExit) as info:
        main(["costs", "--by", "version,route", "--json"])
    out, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    assert [(r["version"], r["route"], r["requests"]) for r in json.loads(out)] == [
        ("support@1", "target:support@production", 3),
        ("support@2", "target:support@canary", 2),
    ]
    with pytest.raises(SystemExit):
        main(["costs", "--json"])
    assert set(json.loads(capsys.readouterr().out)[0]) >= {"day", "key", "deployment"}  # the default


def test_admin_costs_by_deployment_version_and_route(gateway, fake, fake_b, h):
    from tests.gateway.conftest import make_settings, url_route

    settings = make_settings({"m": {"routes": [url_route(fake), url_route(fake_b)]}})
    with gateway(settings) as served:
        for _ in range(6):
            h.chat(h.client(served))
        assert served.gateway.flush_traces()
        with h.admin(served) as admin:
            answer = admin.get("/admin/costs", params={"group_by": "deployment,version,route"}).json()
            assert answer["group_by"] == ["deployment", "version", "route"]
            rows = answer["data"]
            assert {r["deployment"] for r in rows} == {"m"} and sum(r["requests"] for r in rows) == 6
            assert all({"version", "route"} <= set(r) for r in rows)
            assert admin.get("/admin/costs").json()["group_by"] == ["day", "key", "deployment"]
