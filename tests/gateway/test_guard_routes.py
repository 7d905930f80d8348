"""Classifier routes (an OpenAI-compatible /moderations endpoint, here the fake upstream), policy names
given through the admin API, and the OpenAPI description of the guard's endpoints."""

from __future__ import annotations

import httpx
import openai
import pytest

from corral.testing import FakeUpstream


@pytest.fixture
def classifier():
    with FakeUpstream(
        name="classifier",
        moderation_terms={"harassment": ["you smell"], "jailbreak": ["grandma exploit"]},
    ).running() as upstream:
        yield upstream


def _settings(h, fake, classifier, **policy):
    route = {"url": classifier.url, "model": "mod-1", "timeout_s": 1.0}
    default = {"pii": "redact", "moderation": "block", "moderation_classifier": route, **policy}
    return h.settings({"m": {"routes": [h.url_route(fake)]}}, guard={"policies": {"default": default}})


def _classifier_bodies(classifier):
    return [r["body"] for r in classifier.requests if r["path"] == "/v1/moderations"]


def test_a_classifier_route_blocks_what_the_term_lists_miss_and_sees_only_redacted_text(
    h, gateway, fake, classifier
):
    with gateway(_settings(h, fake, classifier)) as gw:
        with pytest.raises(openai.BadRequestError) as caught:
            h.chat(h.client(gw), text="you smell, jane@example.org")
        assert caught.value.body["code"] == "content_policy_violation"
        assert caught.value.body["param"] == "moderation"
        assert fake.count == 0
        (sent,) = _classifier_bodies(classifier)
        assert sent == {"input": ["you smell, [EMAIL]"], "model": "mod-1"}
        h.chat(h.client(gw), text="a kind word")
        assert fake.count == 1
        blocked, passed = h.traces(gw)
        assert blocked["meta"]["guard"][-1] == {
            "check": "moderation",
            "action": "block",
            "found": ["classifier", "harassment"],
        }
        assert "guard" not in passed["meta"]


def test_an_injection_classifier_flags_on_the_trace(h, gateway, fake, classifier):
    route = {"url": classifier.url}
    settings = _settings(
        h, fake, classifier, injection="flag", injection_classifier=route, moderation_classifier=None
    )
    with gateway(settings) as gw:
        h.chat(h.client(gw), text="the grandma exploit, please")
        assert fake.count == 1
        (trace,) = h.traces(gw)
        flag = {"check": "injection", "action": "flag", "found": ["classifier", "jailbreak"]}
        assert flag in trace["meta"]["guard"]


@pytest.mark.parametrize("fault", ["status", "hang", "html"])
def test_a_failing_classifier_lets_the_request_through_and_never_yields_a_5xx(
    h, gateway, fake, classifier, fault
):
    classifier.configure(fault=fault)
    route = {"url": classifier.url, "timeout_s": 0.3}
    with gateway(_settings(h, fake, classifier, moderation_classifier=route)) as gw:
        answer = h.chat(h.client(gw), text="you smell")
        assert answer.choices[0].message.content and fake.count == 1


def test_the_moderations_endpoint_asks_the_default_policys_classifier_too(h, gateway, fake, classifier):
    with gateway(_settings(h, fake, classifier)) as gw:
        result = h.client(gw).moderations.create(input=["you smell", "I want to end my life", "hello"])
        flagged = [r.flagged for r in result.results]
        assert flagged == [True, True, False]
        assert result.results[0].categories.harassment is True
        assert result.results[1].categories.self_harm is True
        (sent,) = _classifier_bodies(classifier)  # one request for all inputs
        assert sent["input"] == ["you smell", "I want to end my life", "hello"]


def test_an_unknown_policy_through_the_admin_api_is_refused_naming_it(h, gateway, fake):
    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}}, guard={"policies": {"default": {"pii": "redact"}}}
    )
    with gateway(settings) as gw, h.admin(gw) as a:
        for policy in ("suport", "Default"):
            bad = a.put("/admin/deployments/m", json={"guard": policy, "routes": [h.url_route(fake)]})
            assert bad.status_code == 400, bad.text
            message = bad.json()["error"]["message"]
            assert f"'{policy}'" in message and "guard.policies" in message and "default" in message
        assert a.get("/admin/deployments/m").json()["m"]["guard"] is None
        ok = a.put("/admin/deployments/raw", json={"guard": "off", "routes": [h.url_route(fake)]})
        assert ok.status_code == 200, ok.text
        h.chat(h.client(gw), text="jane@example.org")
        assert fake.requests[-1]["body"]["messages"][0]["content"] == "[EMAIL]"


def test_without_any_policy_a_named_one_is_refused_too(h, gateway, fake):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw, h.admin(gw) as a:
        bad = a.put("/admin/deployments/n", json={"guard": "support", "routes": [h.url_route(fake)]})
        assert bad.status_code == 400 and "'support'" in bad.json()["error"]["message"]
        assert "none defined" in bad.json()["error"]["message"]


def test_a_stored_deployment_whose_policy_is_gone_is_not_served_unguarded(h, gateway, fake):
    from corral.gateway.deployments import DeploymentStore

    settings = h.settings(
        {"m": {"routes": [h.url_route(fake)]}}, guard={"policies": {"default": {"pii": "redact"}}}
    )
    with gateway(settings) as gw:
        DeploymentStore(gw.gateway.store).put("old", {"guard": "gone", "routes": [h.url_route(fake)]}, "t")
        gw.gateway.watcher.poll()
        assert "old" not in gw.gateway.live and "m" in gw.gateway.live
        with pytest.raises(openai.NotFoundError):
            h.chat(h.client(gw), model="old")
        assert fake.count == 0


def test_openapi_describes_moderations_users_and_the_deployment_guard(h, gateway, fake):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        spec = httpx.get(gw.base_url + "/openapi.json").json()
        paths = spec["paths"]
        assert "post" in paths["/v1/moderations"]
        assert set(paths["/admin/users/{id}"]) == {"delete"}
        put = paths["/admin/deployments/{name}"]["put"]["requestBody"]["content"]["application/json"]
        assert "guard" in put["schema"]["properties"]


def test_a_reload_naming_a_policy_the_gateway_lacks_is_refused():
    from corral.config import Deployment
    from corral.errors import ConfigError
    from corral.gateway.deployments import check_policies

    specs = {
        "m": Deployment.model_validate({"guard": "new", "routes": [{"url": "http://x/v1", "model": "m"}]})
    }
    with pytest.raises(ConfigError, match="m: 'new'"):
        check_policies(specs, ("default",), "corral.yaml")
    check_policies(specs, ("default", "new"), "corral.yaml")
    check_policies(specs, None, "corral.yaml")
