"""The lifecycle a new user walks, through the CLI and the openai SDK only.

quickstart → serve → register → traffic → from-traces → train → canary → costs, on the starter
model (a 4 MB Llama) with a two-step training run, so it fits in CI in a few minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
ADMIN = "sk-e2e-admin-key"
PRICE = {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class User:
    """Runs `corral ...` in one project directory, as a user at a shell would."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
            "CORRAL_HOME": str(home / ".corral"),
            "CORRAL_ADMIN_KEY": ADMIN,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def corral(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "corral.cli.main", *args],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, (
            f"corral {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.corral(*args, "--json"))


def _until(predicate: Callable[[], Any], what: str, log: Path, timeout_s: float = 180) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = predicate()
        except (httpx.HTTPError, openai.APIError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen; serve log:\n{log.read_text()[-4000:]}")


def _questions() -> list[str]:
    from corral.train.starter import KNOWN_FILE, rows

    seen: list[str] = []
    for row in rows(KNOWN_FILE, split="test"):
        question = row["messages"][0]["content"]
        if question not in seen:
            seen.append(question)
    return seen[:16]


def test_quickstart_serve_register_traffic_from_traces_train_canary_costs(tmp_path):
    from corral.train.starter import MODEL_DIR

    user = User(tmp_path)
    assert "starter@1 is production" in user.corral("quickstart", timeout=600)

    # register a model of our own (the starter's files stand in for it) and make it production
    registered = user.json("models", "register", "helpdesk", str(MODEL_DIR))
    assert (registered["name"], registered["version"]) == ("helpdesk", 1)
    user.corral("models", "alias", "set", "helpdesk", "production", "1")

    # serve it: the deployment goes into the corral.yaml quickstart wrote
    config_file = tmp_path / "corral.yaml"
    config = yaml.safe_load(config_file.read_text())
    port = _free_port()
    config["gateway"] = {
        **config.get("gateway", {}),
        "port": port,
        "deployments_poll_s": 0.2,
        "worker_health_interval_s": 0.2,
    }
    config["engine"] = {"device": "cpu", "worker_port_start": _free_port()}
    config["deployments"] = {"helpdesk": {"routes": [{"target": "helpdesk@production", "price": PRICE}]}}
    config_file.write_text(yaml.safe_dump(config))
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
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    try:
        _until(lambda: httpx.get(base + "/ready").status_code == 200, "the gateway getting ready", log)
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

        _until(both_live, "the canary's worker starting", log)
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
