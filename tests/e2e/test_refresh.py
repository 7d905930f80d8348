"""The closed loop on the starter model, through the CLI, the gateway and simulated users only.

starter@1 serves the `support` deployment; users ask about the held-back intents, rate those answers
bad and send the right answer as a correction; the feedback alert fires, and `corral pipeline run`
started with that alert as its trigger builds a dataset from those traces
(plus replayed old data), trains starter@2, gates it (better on the new intents, no worse on the old),
canaries it while the users keep coming and promotes it; starter@1 drains and is retired. Then a
deliberately broken starter@3 (a destructive learning rate, let through by a lax gate) is canaried and
rolled back by the controller on the users' feedback, before its share ever grows.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from corral.testing.users import Users, corpus

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("torch") is None or importlib.util.find_spec("peft") is None,
        reason="needs the engine and train extras",
    ),
]


def _pipeline(
    tmp_path: Path, name: str, train: dict[str, Any], gates: list[dict[str, Any]], canary: dict[str, Any]
) -> Path:
    gate_files = []
    for i, gate in enumerate(gates):
        (tmp_path / f"{name}-gate-{i}.yaml").write_text(yaml.safe_dump(gate))
        gate_files.append(f"{name}-gate-{i}.yaml")
    spec = {
        "name": name,
        "model": "starter",
        "deployment": "support",
        "collect": {"window": "1d", "below": 0.5, "good_sample": 30, "use_corrections": True, "min_rows": 20},
        "dataset": {"name": "support-refresh", "replay": 0.4},
        "train": {
            "method": "full", "batch_size": 16, "max_seq_len": 128, "warmup_steps": 0, "checkpoint_every": 20,
            **train,
        },
        "evaluate": {"gates": gate_files, "limit": 30, "max_tokens": 48},
        "canary": {
            "check_interval_s": 2, "max_duration_s": 240, "alpha": 0.05, "drain_timeout_s": 30,
            "margins": {"error_rate": 0.1, "feedback": 0.2, "latency_p95": None}, **canary,
        },
        "retire": {"drain_timeout_s": 30},
        "triggers": {"alerts": ["bad-answers"]},
    }  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run_pipeline(
    user: Any, users: Users, file: Path, db: Path, trigger: str = "manual"
) -> subprocess.CompletedProcess[str]:
    """`corral pipeline run FILE --json`, with the users coming once the canary starts (training and
    evaluation get the CPU to themselves before that), and still coming through promotion."""
    from corral.pipeline import RunStore
    from corral.store import Store

    process = subprocess.Popen(
        [sys.executable, "-m", "corral.cli.main", "pipeline", "run", str(file), "--json", "--trigger", trigger],
        cwd=user.home, env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    store = Store(f"sqlite:///{db}")
    try:
        while process.poll() is None:
            runs = RunStore(store).list(file.stem, limit=1)
            if runs and any(s.name == "canary" for s in RunStore(store).get(runs[0].id).stages):
                break
            time.sleep(1)
        users.start()
        out, err = process.communicate(timeout=600)
    finally:
        users.stop()
        store.dispose()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _served_by(admin: httpx.Client, traces: list[tuple[str, str]]) -> dict[str, str]:
    ids = {t for t, _ in traces}
    found = admin.get("/admin/traces", params={"limit": 10000}).json()["data"]
    return {t["id"]: t["model_version"] for t in found if t["id"] in ids}


def test_feedback_with_corrections_refreshes_the_model_promotes_it_and_rolls_a_broken_one_back(tmp_path, e2e):
    user = e2e.User(tmp_path)
    user.corral("init")
    port = e2e.serving_config(
        tmp_path / "corral.yaml",
        {"support": {"routes": [{"target": "starter@production"}]}},
        tracing={"flush_interval_s": 0.2},
        # no monitor loop (its drift reports embed every prompt: minutes of CPU here); `alerts check` instead
        monitor={"enabled": False, "alerts": [{
            "name": "bad-answers", "metric": "feedback_mean", "threshold": 0.6, "deployment": "support",
            "for_minutes": 60, "sinks": ["log"],
        }]},
    )  # fmt: skip
    # the starter model in production (what `corral quickstart` registers), without the quickstart's demo
    subprocess.run(
        [sys.executable, "-c", "from corral.registry import open_registry; from corral.train.starter import "
         "ensure_starter_model; ensure_starter_model(open_registry())"],
        cwd=tmp_path, env=user.env, check=True, timeout=300,
    )  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "corral.cli.main", "serve"], cwd=tmp_path, env=user.env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {e2e.ADMIN}"}, timeout=60)
    answers, new, known = corpus()
    try:
        e2e.until(lambda: httpx.get(base + "/ready").status_code == 200, "the gateway getting ready", log)
        key = user.json("keys", "create", "--name", "app", "--models", "support")["key"]
        users = Users(base, key, answers, new[:40] + known[:40])

        # traffic with the held-back intents: users rate those answers bad and correct them
        for i, question in enumerate(new[:90] + known[:20]):
            users.ask(f"early-{i}", question)
        assert set(users.statuses) == {200}
        e2e.until(lambda: len(_served_by(admin, users.traces)) == 110, "the traces being stored", log)

        # the feedback alert fires on those ratings; the refresh pipeline names it as its trigger
        fired = e2e.until(lambda: user.json("alerts", "check", "--json"), "the feedback alert firing", log)
        [alert] = [e for e in fired if e["rule"] == "bad-answers" and e["action"] == "fire"]
        assert alert["value"] < 0.6

        # the refresh: dataset from the corrected traces, starter@2, gates, canary, promotion
        refresh = _pipeline(
            tmp_path, "refresh", {"max_steps": 60, "lr": 0.003, "eval_every": 60},
            [
                {"against": "production", "dataset": "support-new@1", "rules": ["exact_match >= baseline + 0.2"]},
                {"against": "production", "dataset": "support@1", "rules": ["exact_match >= baseline - 0.1"]},
            ],
            {"steps": [50, 100], "min_samples": 40},
        )  # fmt: skip
        users.statuses.clear()
        from corral.pipeline import load_pipeline
        from corral.pipeline.triggers import alert_starts

        assert alert_starts(load_pipeline(refresh), alert)  # what `corral serve` runs on this alert
        done = _run_pipeline(user, users, refresh, tmp_path / ".corral" / "corral.db", f"alert:{alert['id']}")
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        run = json.loads(done.stdout)
        stages = {s["name"]: s for s in run["stages"]}
        assert run["status"] == "succeeded" and run["trigger"] == f"alert:{alert['id']}"
        assert all(s["status"] == "done" for s in stages.values()), stages
        assert stages["collect"]["output"]["corrected"] >= 80 and stages["dataset"]["output"]["replayed"] > 0
        assert stages["train"]["output"]["version"] == "starter@2"
        new_gate, known_gate = stages["evaluate"]["output"]["gates"]
        assert new_gate["passed"] and known_gate["passed"]
        canary = stages["canary"]["output"]
        assert canary["outcome"] == "promoted" and canary["decisions"][-1]["action"] == "promote"
        assert set(users.statuses) == {200}, "a request failed during the canary or the promotion"
        assert user.json("models", "show", "starter@production")["version"] == 2
        e2e.until(
            lambda: user.json("models", "show", "starter@1")["stage"] == "retired", "starter@1 retiring", log
        )
        assert [v["version"] for v in user.json("datasets", "show", "support-refresh")] == [1]

        # a broken starter@3 gets through a lax gate; the canary rolls it back on the users' feedback
        broken = _pipeline(
            tmp_path, "broken", {"max_steps": 4, "lr": 0.5, "eval_every": 4},
            [{"against": "production", "dataset": "support@1", "rules": ["exact_match >= 0"]}],
            {"steps": [20, 50, 100], "min_samples": 200},
        )  # fmt: skip
        users.statuses.clear()
        before = len(users.traces)
        done = _run_pipeline(user, users, broken, tmp_path / ".corral" / "corral.db")
        assert done.returncode == 1, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"  # rejected
        run = json.loads(done.stdout)
        stages = {s["name"]: s for s in run["stages"]}
        assert run["status"] == "rejected" and stages["train"]["output"]["version"] == "starter@3"
        canary = stages["canary"]["output"]
        assert canary["outcome"] == "rolled_back" and stages["retire"]["status"] == "skipped"
        assert max(d["share"] for d in canary["decisions"]) == 20  # never past its first share
        assert user.json("models", "show", "starter@production")["version"] == 2
        served = _served_by(admin, users.traces[before:])
        on_broken = {u for t, u in users.traces[before:] if served.get(t) == "starter@3"}
        everyone = {u for _, u in users.traces[before:]}
        assert on_broken and len(on_broken) <= 0.35 * len(everyone)  # about its 20% share, sticky by user
        spec = admin.get("/admin/deployments/support").json()["support"]
        assert [r["target"] for r in spec["routes"]] == ["starter@production"]
        status = user.corral("pipeline", "status", run["id"][:8])
        assert "canary arms" in status and "starter@3" in status and "rolled_back" in status
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0, log.read_text()[-3000:]
