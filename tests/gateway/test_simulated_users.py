"""The simulated users of docs/refresh.md and the refresh end-to-end test (`python -m corral.testing.users`)."""

from __future__ import annotations

from sqlalchemy import select

from corral.store.models import FeedbackRow
from corral.testing.users import corpus, main


def test_users_rate_answers_and_correct_the_held_back_intents(gateway, fake, h, capsys):
    answers, new, known = corpus()
    held_back = set(new)
    # the starter model's behaviour: right on the intents it knows, clueless on the held-back ones
    fake.configure(reply=lambda body: "no idea" if body["messages"][-1]["content"] in held_back else (
        answers[body["messages"][-1]["content"]]
    ))  # fmt: skip
    with gateway(h.settings({"support": {"routes": [h.url_route(fake)]}})) as gw:
        code = main(["--url", gw.base_url, "--key", h.ADMIN_KEY, "--corrections", "--requests", "16",
                     "--users", "5", "--progress-s", "0.2"])  # fmt: skip
        assert code == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert out[-1].startswith("done: 16 requests, 16 answered, 0 failed;")
        traces = {t["id"]: t for t in h.traces(gw, deployment="support")}
        with gw.gateway.store.session() as session:
            feedback = session.scalars(select(FeedbackRow)).all()
    assert len(traces) == 16 and len(feedback) == 16
    assert {t["user"] for t in traces.values()} <= {f"user-{i}" for i in range(5)}
    asked = {t["id"]: t["request"]["messages"][-1]["content"] for t in traces.values()}
    for row in feedback:
        question = asked[row.trace_id]
        if question in held_back:
            assert row.score == 0 and row.correction == answers[question] and row.source == "user"
        else:
            assert row.score == 1 and row.correction is None
    assert any(q in held_back for q in asked.values()) and any(q not in held_back for q in asked.values())


def test_a_bad_url_key_or_deployment_is_one_line_and_exit_code_1(gateway, fake, h, capsys):
    assert main(["--url", "http://127.0.0.1:9", "--key", "sk-x", "--requests", "1"]) == 1
    assert capsys.readouterr().err.startswith("error: cannot reach the gateway at http://127.0.0.1:9")
    with gateway(h.settings({"support": {"routes": [h.url_route(fake)]}})) as gw:
        assert main(["--url", gw.base_url, "--key", "sk-wrong", "--requests", "1"]) == 1
        assert capsys.readouterr().err.strip() == "error: the gateway refused the key sk-wrong…: HTTP 401"
        assert (
            main(["--url", gw.base_url, "--key", h.ADMIN_KEY, "--deployment", "nope", "--requests", "1"]) == 1
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["error: the key may not use the deployment 'nope' (it may use: support)"]
