"""`corral monitor report`, `corral monitor drift`, `corral alerts list|check`, `corral keys create --viewer`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from corral.cli.main import main
from corral.store import Store
from corral.store.models import DeploymentRow
from corral.testing.traffic import insert_traces, trace_row


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return int(exit_.value.code or 0), capsys.readouterr().out


@pytest.fixture
def seeded(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CORRAL_DATABASE_URL", url)
    store = Store(url)
    now = datetime.now(UTC)
    rows = [trace_row(f"{i:032x}", now - timedelta(minutes=i % 50, seconds=1), "chat", prompt=f"question {i % 5}",
                      latency_ms=3000.0 if i % 2 else 2500.0) for i in range(200)]  # fmt: skip
    insert_traces(store, rows)
    with store.session() as session:
        session.add(DeploymentRow(name="chat", spec={"routes": []}, updated_by="test"))
    (tmp_path / "corral.yaml").write_text(
        "monitor:\n  alert_webhook: http://127.0.0.1:9/unreachable\n  webhook_retries: 0\n  alerts:\n"
        "    - {name: slow, metric: p95_latency_ms, threshold: 1000, for_minutes: 5, sinks: [log]}\n"
    )
    return store


def test_monitor_report_and_alerts_from_the_cli(seeded, capsys):
    code, out = run(capsys, "monitor", "report", "--json", "--hours", "2")
    assert code == 0
    (row,) = json.loads(out)
    assert row["deployment"] == "chat" and row["requests"] == 200
    code, out = run(capsys, "monitor", "report", "--by", "deployment,model_version")
    assert code == 0 and "chat" in out
    code, out = run(capsys, "alerts", "check")
    assert code == 0 and "firing: slow on chat" in out
    code, out = run(capsys, "alerts", "check")
    assert code == 0 and "0 change(s)" in out  # still firing: not sent again
    code, out = run(capsys, "alerts", "list", "--json")
    assert [e["state"] for e in json.loads(out)] == ["firing"]


def test_monitor_drift_without_text_and_bad_input(seeded, capsys):
    code, out = run(capsys, "monitor", "drift", "chat", "--no-text", "--hours", "0.4", "--json")
    assert code == 0
    report = json.loads(out)
    assert {f["feature"] for f in report["features"]} >= {"latency_ms", "prompt_tokens"}
    code, _ = run(capsys, "monitor", "report", "--since", "yesterday")
    assert code == 2
    code, _ = run(capsys, "monitor", "report", "--by", "colour")
    assert code == 2


def test_monitor_drift_against_a_dataset_version(seeded, capsys, tmp_path, monkeypatch):
    from corral.registry import open_registry

    monkeypatch.setenv("CORRAL_ARTIFACTS_URL", str(tmp_path / "artifacts"))
    rows = [{"prompt": f"question {i % 5}", "completion": "Sure."} for i in range(100)]
    open_registry(actor="test").datasets.register("faq", rows)
    code, out = run(capsys, "monitor", "drift", "chat", "--reference-dataset", "faq@1", "--split", "train",
                    "--no-text", "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["reference_dataset"] == "faq@1"
    assert {f["feature"] for f in report["features"]} == {"prompt_chars", "output_chars"}
    assert run(capsys, "monitor", "drift", "chat", "--reference-dataset", "nope@1", "--no-text")[0] == 3
    assert run(capsys, "monitor", "drift", "chat", "--split", "train", "--no-text")[0] == 2
    assert run(capsys, "monitor", "drift", "chat", "--reference-dataset", "faq", "--reference-hours", "2")[0] == 2


def test_keys_create_viewer(seeded, capsys):
    code, out = run(capsys, "keys", "create", "--name", "board", "--viewer", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["viewer"] and info["models"] == [] and not info["admin"]
    code, _ = run(capsys, "keys", "create", "--name", "x", "--viewer", "--admin")
    assert code == 2
