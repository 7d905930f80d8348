"""Gates: parsing rules, the pure verdict on two summaries, and `corral eval gate` exit codes."""

from __future__ import annotations

import math

import pytest
import yaml
from tests.evaluate.conftest import half_right

from corral.cli.main import main
from corral.errors import InvalidInputError
from corral.evaluate import parse_gate, verdict
from corral.evaluate.gates import parse_rule
from corral.evaluate.stats import Difference


def _est(value, low=None, high=None):
    return {"value": value, "low": value if low is None else low, "high": value if high is None else high}


def _rules(*texts):
    return [parse_rule(t, i) for i, t in enumerate(texts)]


def test_rules_parse_constants_offsets_and_scales():
    a, b, c, d = _rules(
        "exact_match >= baseline - 0.01",
        "latency_p95 <= 1.2 * baseline",
        "json_valid == 1",
        {"rule": "f1_macro > baseline", "with": "lower_bound"},
    )
    assert (a.metric, a.op, a.scale, a.offset) == ("exact_match", ">=", 1.0, -0.01)
    assert (b.scale, b.offset) == (1.2, 0.0) and (c.scale, c.offset) == (0.0, 1.0)
    assert d.bound == "lower_bound" and d.uses_baseline


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("exact_match 1", "does not parse"),
        ("exact_match >> 1", "cannot read the right-hand side"),
        ("exact_match >= baseline ** 2", "cannot read the right-hand side"),
        ({"rule": "x >= 1", "with": "median"}, "'with' must be lower_bound or upper_bound"),
        (3, "a rule is a string"),
    ],
)
def test_a_bad_rule_names_its_index_and_problem(rule, message):
    with pytest.raises(InvalidInputError, match=rf"gate.yaml: rules\[0\].*{message}"):
        parse_gate({"dataset": "d@1", "rules": [rule]}, "gate.yaml")


def test_point_estimates_decide_by_default():
    rules = _rules("exact_match >= baseline - 0.01", "latency_p95 <= 1.2 * baseline", "json_valid == 1")
    cand = {"exact_match": _est(0.90), "latency_p95": _est(110.0), "json_valid": _est(1.0)}
    base = {"exact_match": _est(0.905), "latency_p95": _est(100.0), "json_valid": _est(1.0)}
    result = verdict(rules, cand, base)
    assert result.passed and [r.threshold for r in result.results] == pytest.approx([0.895, 120.0, 1.0])
    slower = verdict(rules, {**cand, "latency_p95": _est(130.0)}, base)
    assert not slower.passed and [r.rule.metric for r in slower.failed] == ["latency_p95"]
    assert "130 fails <= 120" in slower.failed[0].reason


def test_lower_bound_uses_the_paired_difference_interval():
    rules = _rules({"rule": "exact_match >= baseline - 0.01", "with": "lower_bound"})
    cand, base = {"exact_match": _est(0.92)}, {"exact_match": _est(0.90)}
    tight = {"exact_match": Difference(0.92, 0.90, 0.02, 0.005, 0.035, 0.01, 200)}
    loose = {"exact_match": Difference(0.92, 0.90, 0.02, -0.04, 0.08, 0.4, 200)}
    assert verdict(rules, cand, base, tight).passed
    failed = verdict(rules, cand, base, loose)
    assert not failed.passed and failed.results[0].compared == pytest.approx(0.86)
    assert "lower bound" in failed.results[0].reason


def test_constant_rule_with_a_bound_uses_the_candidates_own_interval():
    rules = _rules({"rule": "exact_match >= 0.9", "with": "lower_bound"})
    assert not verdict(rules, {"exact_match": _est(0.95, 0.88, 0.98)}, {}).passed
    assert verdict(rules, {"exact_match": _est(0.95, 0.91, 0.98)}, {}).passed


def test_a_metric_missing_from_a_summary_fails_with_a_reason():
    result = verdict(_rules("bias_gap <= 0.05"), {}, {})
    assert not result.passed and "not measured on the candidate" in result.results[0].reason
    assert math.isnan(result.results[0].candidate)


def _gate_file(tmp_path, name="gate", **data):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_cli_gate_exit_codes_pass_fail_bad_file_and_outage(reg, qa, answering, tmp_path, capsys):
    good = answering(lambda b: "a" + str(b["messages"][-1]["content"])[1:])
    half = answering(half_right)
    reg.models.register("svc", endpoint=half.url, upstream_model="fake-model")
    reg.models.set_alias("svc", "production", 1)
    reg.models.register("svc", endpoint=good.url, upstream_model="fake-model")
    reg.models.register("svc", endpoint="http://127.0.0.1:9/v1", upstream_model="fake-model")
    rules = ["exact_match >= baseline - 0.01", {"rule": "exact_match >= baseline", "with": "lower_bound"}]
    gate = _gate_file(tmp_path, against="production", dataset=qa, split="test", rules=rules)

    def gate_exit(*args):
        with pytest.raises(SystemExit) as info:
            main(["eval", "gate", *args])
        return info.value.code

    assert gate_exit("svc@2", gate) == 0
    out = capsys.readouterr().out
    assert "gate passed" in out and "exact_match >= baseline - 0.01" in out
    requests_before = good.count + half.count
    assert gate_exit("svc@2", gate) == 0  # both runs reused from the store
    assert good.count + half.count == requests_before
    capsys.readouterr()
    strict = _gate_file(
        tmp_path, "strict", against="svc@2", dataset=qa, rules=["exact_match >= baseline - 0.01"]
    )
    assert gate_exit("svc@1", strict) == 1
    assert "gate failed: exact_match value 0.5 fails >= 0.99" in capsys.readouterr().out
    bad = _gate_file(tmp_path, "bad", dataset=qa, rules=["exact_match => 1"])
    assert gate_exit("svc@2", bad) == 2
    assert "rules[0] 'exact_match => 1' does not parse" in capsys.readouterr().err
    assert gate_exit("svc@3", gate) == 7
    assert "every request to svc@3 failed" in capsys.readouterr().err
    unknown = _gate_file(tmp_path, "unknown", dataset=qa, rules=["exactness >= 1"])
    assert gate_exit("svc@2", unknown) == 2
