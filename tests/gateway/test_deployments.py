"""Routing through real gateways: sticky canary, shadow, fallback with breaker, balancing, rollback, admin changes,
retiring from another process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import openai
import pytest

from corral.registry import drain
from corral.store import Store
from corral.testing import FakeUpstream


def _answered_by(response) -> str:  # type: ignore[no-untyped-def]
    return response.choices[0].message.content.split(":")[0]


def _wait(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _registered(settings, *endpoints: str):  # type: ignore[no-untyped-def]
    """The registry the gateway will use, with one `support` version per endpoint: targets must resolve."""
    from corral.registry import open_registry

    reg = open_registry(settings)
    for url in endpoints:
        reg.models.register("support", endpoint=url, upstream_model="fake-model")
    return reg


def _even_canary(h, fake, fake_b, sticky_by: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """A 50/50 canary between the two fakes, sticky by `sticky_by`."""
    routes = [h.url_route(fake, weight=50), h.url_route(fake_b, weight=50)]
    return {"mode": "canary", "sticky_by": sticky_by, "routes": routes}


def test_canary_keeps_each_user_on_one_version(gateway, fake, fake_b, h):
    with gateway(h.settings({"m": _even_canary(h, fake, fake_b, "user")})) as gw:
        c = h.client(gw)
        seen = {
            user: {_answered_by(h.chat(c, user=user)) for _ in range(4)}
            for user in ("u1", "u2", "u3", "u4", "u5", "u6")
        }
    assert all(len(versions) == 1 for versions in seen.values())
    assert {v for versions in seen.values() for v in versions} == {"a", "b"}  # both versions served someone


def test_sticky_by_session_uses_the_session_header(gateway, fake, fake_b, h):
    with gateway(h.settings({"m": _even_canary(h, fake, fake_b, "session")})) as gw:
        for session in ("s1", "s2", "s3"):
            c = h.client(gw, default_headers={"x-corral-session": session})
            assert len({_answered_by(h.chat(c)) for _ in range(4)}) == 1
        assert {t["session"] for t in h.traces(gw)} == {"s1", "s2", "s3"}


def test_shadow_copy_is_traced_and_never_delays_the_user(gateway, fake, h):
    with FakeUpstream(name="shadow", latency_s=1.5).running() as slow:
        spec = {"routes": [h.url_route(fake)], "shadow": [h.url_route(slow)]}
        with gateway(h.settings({"m": spec})) as gw:
            raw = h.client(gw).chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
            assert _answered_by(raw.parse()) == "a"
            trace_id = raw.headers["x-corral-trace-id"]
            # the user has the answer while the shadow is still waiting for its upstream
            assert _wait(lambda: slow.count == 1, 1.0) and not h.traces(gw, shadow_of=trace_id)
            assert _wait(lambda: bool(h.traces(gw, shadow_of=trace_id)))
            [copy] = h.traces(gw, shadow_of=trace_id)
            assert copy["status"] == 200 and copy["response"]["choices"][0]["message"]["content"].startswith(
                "shadow:"
            )


def test_fallback_answers_when_the_route_fails_and_the_breaker_opens(gateway, fake, fake_b, h):
    fake.configure(fault="status", fault_status=503)
    spec = {"routes": [h.url_route(fake)], "fallbacks": [h.url_route(fake_b)], "retries": 1}
    settings = h.settings({"m": spec}, gateway={"breaker_failures": 4, "breaker_reset_s": 60})
    with gateway(settings) as gw:
        c = h.client(gw)
        assert _answered_by(h.chat(c)) == "b"
        assert fake.count == 2  # the first try and one retry
        assert _answered_by(h.chat(c)) == "b"
        assert fake.count == 4  # four failures in a row: the breaker is now open
        for _ in range(3):
            assert _answered_by(h.chat(c)) == "b"
        assert fake.count == 4  # ...so the failing route is not tried any more
        trace = h.traces(gw)[-1]
        assert trace["route"].endswith(fake_b.url) and trace["meta"]["fallback"]


def test_connection_errors_and_timeouts_fall_back(gateway, fake, fake_b, h):
    spec = {"routes": [{"url": "http://127.0.0.1:9/v1", "model": "x"}], "fallbacks": [h.url_route(fake_b)]}
    fake.configure(fault="hang")
    spec2 = {"routes": [h.url_route(fake, timeout_s=0.5)], "fallbacks": [h.url_route(fake_b)], "retries": 0}
    with gateway(h.settings({"refused": spec, "slow": spec2})) as gw:
        c = h.client(gw)
        assert _answered_by(h.chat(c, model="refused")) == "b"
        assert _answered_by(h.chat(c, model="slow")) == "b"


def test_every_route_failing_is_a_502_in_openai_form(gateway, fake, h):
    fake.configure(fault="status", fault_status=500)
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)], "retries": 0}})) as gw:
        with pytest.raises(openai.InternalServerError) as info:
            h.chat(h.client(gw))
        assert info.value.status_code == 502
        [trace] = h.traces(gw)
        assert trace["status"] == 502


def test_instances_of_one_route_are_balanced_by_least_in_flight(gateway, fake, fake_b, h):
    fake.configure(latency_s=0.3)
    route = {"url": fake.url, "instances": [fake_b.url], "model": "fake-model"}
    with gateway(h.settings({"m": {"routes": [route]}})) as gw:
        import concurrent.futures

        c = h.client(gw)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: _answered_by(h.chat(c)), range(16)))
    assert answers.count("b") > answers.count("a")  # the fast instance frees up first and takes more


def test_alias_move_and_rollback_reach_the_gateway_without_restart(gateway, fake, fake_b, h, tmp_path):
    settings = h.settings({"support": {"routes": [{"target": "support@production"}]}})
    reg = _registered(settings, fake.url, fake_b.url)
    reg.models.set_alias("support", "production", 1)
    with gateway(settings) as gw:
        c = h.client(gw)
        assert _wait(
            lambda: "support" in gw.gateway.live and gw.gateway.live["support"].routes[0] is not None, 2.5
        )
        assert _answered_by(h.chat(c, model="support")) == "a"
        reg.models.set_alias("support", "production", 2)
        assert _wait(lambda: _answered_by(h.chat(c, model="support")) == "b", 2.0)
        reg.models.rollback("support")
        assert _wait(lambda: _answered_by(h.chat(c, model="support")) == "a", 2.0)
        assert h.traces(gw)[-1]["model_version"] == "support@1"


def test_a_draining_version_gets_no_requests_and_retires_when_idle(gateway, fake, fake_b, h):
    spec = {"routes": [{"target": "support@1", "weight": 1}, {"target": "support@2", "weight": 1}]}
    settings = h.settings({"support": spec})
    _registered(settings, fake.url, fake_b.url)
    with gateway(settings) as gw:
        reg = gw.gateway.registry
        assert _wait(lambda: all(r is not None for r in gw.gateway.live["support"].routes), 2.5)
        c = h.client(gw)
        gw.gateway.version_in_flight["support@1"] = 1  # as if a long request were still on it
        reg.models.retire("support@1")
        assert reg.models.resolve("support@1").stage == "draining"
        assert _wait(lambda: gw.gateway.live["support"].routes[0] is None, 2.0)
        answers = {_answered_by(h.chat(c, model="support")) for _ in range(6)}
        assert answers == {"b"}
        assert reg.models.resolve("support@1").stage == "draining"
        gw.gateway.version_in_flight["support@1"] = 0
        assert _wait(lambda: reg.models.resolve("support@1").stage == "retired", 2.0)


def test_deployments_changed_through_the_admin_api_are_stored_and_served(gateway, fake, fake_b, h):
    with gateway(h.settings({"m": {"routes": [h.url_route(fake)]}})) as gw:
        c = h.client(gw)
        with h.admin(gw) as a:
            r = a.put("/admin/deployments/m", json={"routes": [h.url_route(fake_b)]})
            assert r.status_code == 200, r.text
            assert _answered_by(h.chat(c)) == "b"
            assert a.put("/admin/deployments/new", json={"routes": [h.url_route(fake)]}).status_code == 200
            assert _answered_by(h.chat(c, model="new")) == "a"
            bad = a.put("/admin/deployments/bad", json={"mode": "canary", "routes": [h.url_route(fake)]})
            assert bad.status_code == 400 and "canary" in bad.json()["error"]["message"]
            assert a.delete("/admin/deployments/new").status_code == 200
            with pytest.raises(openai.NotFoundError):
                h.chat(c, model="new")
            assert set(a.get("/admin/deployments").json()) == {"m"}
        from corral.gateway.deployments import DeploymentStore

        assert DeploymentStore(gw.gateway.store).specs()["m"].routes[0].url == fake_b.url


def test_sticky_by_key_keeps_each_api_key_on_one_version(gateway, fake, fake_b, h):
    from corral.gateway.auth import KeyStore

    with gateway(h.settings({"m": _even_canary(h, fake, fake_b, "key")})) as gw:
        keys = KeyStore(gw.gateway.store)
        seen = []
        for i in range(8):
            c = h.client(gw, key=keys.create(f"k{i}")[0])
            seen.append({_answered_by(h.chat(c, user=f"user-{j}")) for j in range(3)})
    assert all(len(versions) == 1 for versions in seen)  # the user field does not matter here
    assert set().union(*seen) == {"a", "b"}


def test_retire_waits_for_a_real_request_in_flight_on_the_draining_version(gateway, fake, fake_b, h):
    fake.configure(latency_s=4.0)
    settings = h.settings({"support": {"routes": [{"target": "support@production"}]}})
    _registered(settings, fake.url, fake_b.url).models.set_alias("support", "production", 1)
    with gateway(settings) as gw:
        reg = gw.gateway.registry
        assert _wait(lambda: "support" in gw.gateway.live and gw.gateway.live["support"].routes[0], 2.5)
        c = h.client(gw)
        answers: list[str] = []
        slow = threading.Thread(target=lambda: answers.append(_answered_by(h.chat(c, model="support"))))
        slow.start()
        assert _wait(lambda: fake.count == 1, 2.0)
        reg.models.set_alias("support", "production", 2)
        assert reg.models.retire("support@1").stage == "draining"  # a request is still on it
        # the alias move reaches the gateway (within 2 s), then new requests go to version 2
        assert _wait(lambda: gw.gateway.live["support"].routes[0].version_ref == "support@2", 2.0)
        assert _answered_by(h.chat(c, model="support")) == "b"
        assert reg.models.resolve("support@1").stage == "draining"
        slow.join(10)
        assert answers == ["a"]  # the request in flight finished on the old version
        assert _wait(lambda: reg.models.resolve("support@1").stage == "retired", 2.0)


class _ReadyWorkers:
    """A worker directory whose workers are always ready at one URL (a fake engine worker)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def ensure(self, version, replicas, embeddings=False):  # type: ignore[no-untyped-def]
        return [self.url]

    def retain(self, refs) -> None:  # type: ignore[no-untyped-def]
        pass


def test_without_usage_tokens_are_counted_with_the_local_models_tokenizer(gateway, fake, h, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    src = tmp_path / "tok-model"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(b"weights")  # the registry checks there are weights
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(src / "tokenizer.json"))
    fake.configure(usage=False)
    settings = h.settings({"tok": {"routes": [{"target": "tok@1"}]}}, tracing={"store_bodies": False})
    from corral.registry import open_registry

    reg = open_registry(settings)
    reg.models.materialize(reg.models.register("tok", src))  # as the worker does before it is ready
    with gateway(settings, workers=_ReadyWorkers(fake.url)) as gw:
        assert _wait(lambda: "tok" in gw.gateway.live and gw.gateway.live["tok"].routes[0] is not None, 2.5)
        h.chat(h.client(gw), model="tok", text="one two three four five six seven eight")
        [trace] = h.traces(gw)
    # whitespace words and punctuation: 8 prompt tokens; "a: w0 w1 w2" is 5 (the estimate would be 10 and 3)
    assert (trace["prompt_tokens"], trace["completion_tokens"]) == (8, 5)
    assert not trace["tokens_estimated"] and trace["request"] is None  # counted, then the bodies dropped


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
    from corral.artifacts import ArtifactStore
    from corral.registry import Registry

    first = Registry(store, ArtifactStore.from_settings(settings))  # targets must resolve at start
    first.models.register("support", endpoint=fake.url, upstream_model="fake-model")
    first.models.register("support", endpoint=fake_b.url, upstream_model="fake-model")
    first.models.set_alias("support", "production", 1)
    with gateway(settings, store=store) as gw:
        reg = gw.gateway.registry
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


def test_a_retired_or_unknown_target_is_refused_by_the_admin_api_and_explained_by_503_and_ready(
    gateway, fake, h
):
    import httpx

    settings = h.settings({"support": {"routes": [{"target": "support@1"}]}})
    reg = _registered(settings, fake.url)
    with gateway(settings) as gw, h.admin(gw) as a:
        for target, says in (
            ("nosuch@production", "does not resolve"),
            ("support@9", "does not resolve"),
        ):
            r = a.put("/admin/deployments/new", json={"routes": [{"target": target}]})
            assert r.status_code == 400, r.text
            assert f"key 'routes[0].target': '{target}' {says}" in r.json()["error"]["message"]
        assert h.chat(h.client(gw), model="support").choices
        reg.models.retire("support@1")  # nothing in flight: draining, then retired
        assert _wait(lambda: reg.models.resolve("support@1").stage == "retired", 5.0)
        assert _wait(lambda: gw.gateway.live["support"].routes[0] is None, 2.0)
        with pytest.raises(openai.APIStatusError) as refused:
            h.chat(h.client(gw), model="support")
        assert refused.value.status_code == 503
        assert "routes[0]: support@1 is retired" in refused.value.message
        ready = httpx.get(gw.base_url + "/ready")
        assert ready.status_code == 503 and "retired" in ready.json()["problems"]["support"][0]
        r = a.put("/admin/deployments/new", json={"routes": [{"target": "support@1"}]})
        assert r.status_code == 400 and "'support@1' is retired" in r.json()["error"]["message"]
