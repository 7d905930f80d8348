"""`--deployment` through a real gateway: requests carry the gateway key, their traces say they came from
an evaluation (meta.source = eval), and people's feedback through the gateway keeps source `user`."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import select
from tests.evaluate.conftest import half_right
from tests.gateway.conftest import ADMIN_KEY, make_settings, traces

from corral.cli.main import main
from corral.gateway import Gateway
from corral.gateway.server import serve_in_thread
from corral.store.models import FeedbackRow


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch):
    monkeypatch.setenv("CORRAL_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("EVAL_KEY", ADMIN_KEY)


def _eval(qa, gateway_url, *extra):
    with pytest.raises(SystemExit) as info:
        main(
            [
                *["eval", "run", "--deployment", "support", "--metrics", "exact_match", "--no-progress"],
                "--dataset",
                qa,
                "--gateway",
                gateway_url,
                *extra,
            ]
        )
    return info.value.code


def test_eval_through_a_gateway_deployment_is_tagged_as_evaluation_traffic(reg, qa, answering, capsys):
    fake = answering(half_right)
    settings = make_settings({"support": {"routes": [{"url": fake.url, "model": "fake-model"}]}})
    with serve_in_thread(Gateway(settings)) as gw:
        code = _eval(qa, gw.base_url, "--key-env", "EVAL_KEY", "--json")
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out)["summary"]["exact_match"]["value"] == 0.5
        stored = traces(gw, deployment="support")
        assert len(stored) == 20 and all(t["meta"].get("source") == "eval" for t in stored)
        feedback = {"trace_id": stored[0]["id"], "score": 1}
        response = httpx.post(
            f"{gw.base_url}/v1/feedback", json=feedback, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
        )
        assert response.status_code < 300, response.text
        assert gw.gateway.flush_traces()
        with gw.gateway.store.session() as s:
            assert [r.source for r in s.scalars(select(FeedbackRow))] == ["user"]
    assert _eval(qa, "http://127.0.0.1:9") == 7
    assert "every request to support failed" in capsys.readouterr().err
