"""The lifecycle a new user walks, through the CLI and the openai SDK only.

quickstart → serve → register → traffic → from-traces → train → canary → costs, on the starter
model (a 4 MB Llama) with a two-step training run, so it fits in CI in a few minutes.
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys

import httpx
import openai
import pytest
import yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None or importlib.util.find_spec("peft") is None,
        reason="needs the engine and train extras",
    ),
]
PRICE = {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}


def _questions() -> list[str]:
    from corral.train.starter import KNOWN_FILE, rows

    seen: list[str] = []
    for row in rows(KNOWN_FILE, split="test"):
        question = row["messages"][0]["content"]
        if question not in seen:
            seen.append(question)
    return seen[:16]


def test_quickstart_serve_register_traffic_from_traces_train_canary_costs(tmp_path, e2e):
    from corral.train.starter import MODEL_DIR

    user = e2e.User(tmp_path)
    assert "starter@1 is production" in user.corral("quickstart", timeout=600)

    # register a model of our own (the starter's files stand in for it) and make it production
    registered = user.json("models", "register", "helpdesk", str(MODEL_DIR))
    assert (registered["name"], registered["version"]) == ("helpdesk", 1)
    user.corral("models", "alias", "set", "helpdesk", "production", "1")

    # serve it: the deployment goes into the corral.yaml quickstart wrote
    deployments = {"helpdesk": {"routes": [{"target": "helpdesk@production", "price": PRICE}]}}
    port = e2e.serving_config(tmp_path / "corral.yaml", deployments)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "corral.cli.main", "serve"],
            cwd=tmp_path,
            env=user.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {e2e.ADMIN}"}, timeout=60)
    try:
        e2e.until(lambda: httpx.get(base + "/ready").status_code == 200, "the gateway getting ready", log)
        key = user.json("keys", "create", "--name", "app", "--models", "helpdesk")["key"]
        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
        assert [m.id for m in client.models.list().data] == ["helpdesk"]

        # traffic
        questions = _questions()
        for i, question in enumerate(questions):
            answer = client.chat.completions.create(
                model="helpdesk", messages=[{"role": "user", "content": question}], user=f"user-{i}"
            )
            assert answer.choices[0].message.content

        # production traffic becomes a dataset, and a (tiny) training run makes helpdesk@2 from it
        dataset = user.json("datasets", "from-traces", "traffic", "--deployment", "helpdesk")
        assert (dataset["name"], dataset["version"]) == ("traffic", 1) and dataset["row_count"] >= len(
            questions
        ) // 2
        spec = {
            "output": "helpdesk",
            "base": "helpdesk@1",
            "dataset": "traffic@1",
            "method": "full",
            "max_steps": 2,
            "batch_size": 4,
            "max_seq_len": 128,
            "warmup_steps": 0,
            "eval_every": 2,
            "lr": 1e-4,
        }
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        trained = user.json("train", "spec.yaml", "--no-progress")
        assert (trained["name"], trained["version"]) == ("helpdesk", 2)

        # a sticky canary: 50% of users on helpdesk@2, through the admin API, no restart
        canary = {
            "mode": "canary",
            "sticky_by": "user",
            "routes": [
                {"target": "helpdesk@1", "price": PRICE},
                {"target": "helpdesk@2", "weight": 50, "price": PRICE},
            ],
        }
        assert admin.put("/admin/deployments/helpdesk", json=canary).status_code == 200

        def both_live() -> bool:
            live = admin.get("/admin/deployments/helpdesk").json()["helpdesk"]["live"]
            return all(r is not None for r in live["routes"])

        e2e.until(both_live, "the canary's worker starting", log)
        versions = set()
        for i in range(24):
            raw = client.chat.completions.with_raw_response.create(
                model="helpdesk",
                messages=[{"role": "user", "content": questions[i % len(questions)]}],
                user=f"canary-user-{i}",
            )
            versions.add(raw.headers["x-corral-trace-id"])
        traces = admin.get("/admin/traces", params={"limit": 1000}).json()["data"]
        answered_by = {t["model_version"] for t in traces if t["id"] in versions}
        assert answered_by == {"helpdesk@1", "helpdesk@2"}
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.read_text()[-3000:]

    # what it cost: every request traced and priced
    costs = user.json("costs", "--by", "model")
    [helpdesk] = [row for row in costs if row["model"] == "helpdesk"]
    assert helpdesk["requests"] == len(questions) + 24
    assert helpdesk["cost_usd"] > 0 and helpdesk["prompt_tokens"] > 0 and helpdesk["completion_tokens"] > 0
