"""Runs against a fake OpenAI-compatible endpoint: stored, reusable, refused clearly before any request."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from tests.evaluate.conftest import half_right

from corral.cli.main import main
from corral.errors import InvalidInputError, NotFoundError, TargetUnreachableError
from corral.evaluate import RunOptions, TargetSpec, compare, run
from corral.evaluate.runs import load, runs_of

QUIET = RunOptions(progress=False)


def _target(fake):
    return TargetSpec(url=fake.url, upstream_model="fake-model")


def test_run_scores_items_with_intervals_and_stores_every_item(reg, qa, answering):
    fake = answering(half_right)
    result = run(_target(fake), qa, "exact_match,rouge,latency,tokens", registry=reg, options=QUIET)
    em = result.summary["exact_match"]
    assert em["value"] == 0.5 and em["method"] == "wilson" and em["low"] < 0.5 < em["high"] and em["n"] == 20
    assert result.summary["rougeL"]["method"] == "bootstrap"
    assert result.summary["error_rate"]["value"] == 0.0
    assert result.summary["completion_tokens"]["value"] >= 1
    stored = load(reg.store, result.id[:10])
    assert stored.summary == result.summary and stored.status == "complete"
    assert [o.prediction for o in stored.outcomes[:2]] == ["a0", "wrong"]
    assert stored.outcomes[0].reference == "a0" and stored.outcomes[0].latency_ms > 0
    assert stored.outcomes[0].ttft_ms is not None
    assert all(r["headers"].get("x-corral-source") == "eval" for r in fake.requests)
    assert fake.requests[0]["body"]["temperature"] == 0.0


def test_failed_requests_count_as_errors_without_stopping_the_run(reg, qa, answering):
    fake = answering(half_right, fail_next=5, fault_status=503)
    result = run(
        _target(fake), qa, "exact_match", registry=reg, options=RunOptions(progress=False, concurrency=1)
    )
    assert result.error_count == 5 and result.summary["error_rate"]["value"] == 0.25
    assert result.summary["exact_match"]["n"] == 15
    assert any((o.error or "").startswith("HTTP 503") for o in result.outcomes)


def test_unknown_metric_and_missing_fields_are_refused_before_any_request(reg, answering):
    fake = answering(half_right)
    # a conversation ending on the user's turn: the earlier answer makes it a valid chat row, but
    # the item asked has no reference answer
    turns = [
        {"role": "user", "content": "q0"},
        {"role": "assistant", "content": "a0"},
        {"role": "user", "content": "q1"},
    ]
    no_refs = reg.datasets.register("open", [{"messages": turns, "split": "test"}])
    with pytest.raises(InvalidInputError, match="unknown metric 'blue'.*valid metrics: .*bleu"):
        run(_target(fake), no_refs.ref, "blue", registry=reg, options=QUIET)
    with pytest.raises(
        InvalidInputError, match="metric 'bleu' cannot run on open@1 .*needs a reference answer"
    ):
        run(_target(fake), no_refs.ref, "bleu", registry=reg, options=QUIET)
    with pytest.raises(InvalidInputError, match="metric 'json_schema' .* needs a JSON schema"):
        run(_target(fake), no_refs.ref, "json_schema", registry=reg, options=QUIET)
    with pytest.raises(InvalidInputError, match="no 'validation' split"):
        run(_target(fake), no_refs.ref, "json_valid", registry=reg, options=RunOptions(split="validation"))
    assert fake.count == 0


def test_an_unreachable_target_is_its_own_error(reg, qa):
    spec = TargetSpec(url="http://127.0.0.1:9/v1", upstream_model="m")
    with pytest.raises(TargetUnreachableError, match="every request to .* failed .*ConnectError"):
        run(spec, qa, "exact_match", registry=reg, options=QUIET)
    assert runs_of(reg.store) == []
    with pytest.raises(NotFoundError):
        run(TargetSpec(model="ghost@1"), qa, "exact_match", registry=reg, options=QUIET)
    assert issubclass(TargetUnreachableError, Exception) and TargetUnreachableError.exit_code not in (0, 1, 2)


def test_compare_pairs_items_and_reports_interval_and_p_value(reg, qa, answering):
    good = run(
        _target(answering(lambda b: "a" + question_number(b))), qa, "exact_match", registry=reg, options=QUIET
    )
    half = run(_target(answering(half_right)), qa, "exact_match", registry=reg, options=QUIET)
    diff = compare(good.id, half.id, registry=reg).differences["exact_match"]
    assert diff.diff == pytest.approx(0.5) and diff.n == 20 and diff.low > 0 and diff.p_value < 0.01
    same = compare(half.id, half.id, registry=reg).differences["exact_match"]
    assert same.diff == 0 and same.p_value == 1.0


def question_number(body):
    return str(body["messages"][-1]["content"])[1:]


def test_cli_run_list_compare_and_bad_input_exit_codes(reg, qa, answering, capsys):
    fake = answering(half_right)
    args = [
        "eval",
        "run",
        "--dataset",
        qa,
        "--url",
        fake.url,
        "--upstream-model",
        "fake-model",
        "--no-progress",
    ]
    with pytest.raises(SystemExit) as info:
        main([*args, "--metrics", "exact_match", "--json"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    brief = json.loads(out)
    assert brief["summary"]["exact_match"]["value"] == 0.5 and brief["items"] == 20
    with pytest.raises(SystemExit) as info:
        main([*args, "--metrics", "nope"])
    assert info.value.code == 2 and "unknown metric 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["eval", "compare", "0123456789", brief["id"]])
    assert info.value.code == 3 and "no evaluation run '0123456789'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["eval", "compare", brief["id"], brief["id"]])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "exact_match" in out and "p (permutation)" in out
    assert [r.id for r in runs_of(reg.store)] == [brief["id"]]


def test_human_scores_export_and_import_as_a_metric(reg, qa, answering, tmp_path, capsys):
    result = run(_target(answering(half_right)), qa, "exact_match", registry=reg, options=QUIET)
    sheet = tmp_path / "rate.csv"
    with pytest.raises(SystemExit) as info:
        main(["eval", "export", result.id, "--csv", str(sheet)])
    assert info.value.code == 0
    lines = sheet.read_text().splitlines()
    assert lines[0] == "position,question,prediction,reference,score,comment" and lines[1].startswith(
        "0,q0,a0,a0,"
    )
    rated = [lines[0]] + [
        line.replace(",,", ",1,", 1) if i % 2 == 0 else line.replace(",,", ",0,", 1)
        for i, line in enumerate(lines[1:11])
    ]
    sheet.write_text("\n".join(rated) + "\n")
    with pytest.raises(SystemExit) as info:
        main(["eval", "import-scores", result.id, str(sheet), "--name", "helpful"])
    assert info.value.code == 0, capsys.readouterr().err
    stored = load(reg.store, result.id)
    human = stored.summary["human:helpful"]
    assert human["value"] == 0.5 and human["n"] == 10 and human["method"] == "bootstrap"
    assert "human:helpful" in stored.metrics
    bad = tmp_path / "bad.csv"
    bad.write_text("position,score\n999,1\n")
    with pytest.raises(SystemExit) as info:
        main(["eval", "import-scores", result.id, str(bad)])
    assert info.value.code == 2 and "no item at position 999" in capsys.readouterr().err


def test_ctrl_c_stops_cleanly_and_keeps_the_finished_items(reg, qa, answering):
    fake = answering(half_right, latency_s=0.3)
    command = [
        sys.executable,
        "-m",
        "corral.cli.main",
        "eval",
        "run",
        "--dataset",
        qa,
        "--url",
        fake.url,
        "--upstream-model",
        "m",
        "--concurrency",
        "2",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while fake.count < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "interrupted: run" in err and "Traceback" not in err
    (stored,) = runs_of(reg.store)
    assert stored.status == "interrupted" and 0 < stored.item_count < 20
    assert load(reg.store, stored.id).outcomes[0].prediction == "a0"
