"""Acceptance with the shipped starter model, served by an engine worker started for each run."""

from __future__ import annotations

import json

import pytest
import yaml

from corral.cli.main import main
from corral.evaluate import RunOptions, kept_workers, run
from corral.train import starter

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (starter.MODEL_DIR / "model.safetensors").is_file(), reason="no packaged starter model"
    ),
]


def _gate(tmp_path, name, **data):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _exit(args, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out + err


@pytest.fixture
def one_worker_per_version():
    with kept_workers():  # two workers for the whole test instead of one per run
        yield


def test_starter_is_right_on_known_intents_wrong_on_new_ones_and_gates_accordingly(
    reg, tmp_path, capsys, one_worker_per_version
):
    starter.ensure_starter_model(reg)
    options = RunOptions(progress=False)
    known = run("starter@production", "support@1", "exact_match", registry=reg, options=options)
    em = known.summary["exact_match"]
    assert known.target == "starter@1" and known.item_count == 159 and known.error_count == 0
    assert em["value"] >= 0.95 and em["method"] == "wilson" and 0.9 < em["low"] <= em["value"] <= em["high"]
    new = run("starter@production", "support-new@1", "exact_match", registry=reg, options=options)
    assert new.item_count == 39 and new.summary["exact_match"]["value"] <= 0.2

    copy = reg.models.register("starter", starter.MODEL_DIR, description="a copy of the starter")
    same = _gate(
        tmp_path,
        "same",
        against="production",
        dataset="support@1",
        split="test",
        rules=["exact_match >= baseline - 0.01", {"rule": "exact_match >= 0.95", "with": "lower_bound"}],
    )
    code, out = _exit(["eval", "gate", copy.ref, same, "--json"], capsys)
    assert code == 0, out
    held_back = _gate(
        tmp_path, "held-back", against="production", dataset="support-new@1", rules=["exact_match >= 0.9"]
    )
    code, out = _exit(["eval", "gate", "starter@1", held_back], capsys)  # reuses the held-back run
    assert code == 1, out
    assert "gate failed: exact_match value" in out and "fails >= 0.9" in out

    code, out = _exit(["models", "show", "starter@1", "--json"], capsys)
    assert code == 0
    evaluations = json.loads(out)["evaluations"]
    assert {(e["dataset"], e["status"]) for e in evaluations} >= {
        ("support@1", "complete"),
        ("support-new@1", "complete"),
    }
