"""Gates: rules over a candidate's and a baseline's summaries, and the pure verdict on them.

A gate file::

    against: production            # an alias of the candidate's model, or any model reference
    dataset: support@1
    split: test
    rules:
      - exact_match >= baseline - 0.01
      - latency_p95 <= 1.2 * baseline
      - json_valid == 1
      - {rule: exact_match >= baseline, with: lower_bound}

A rule passes on the point estimates by default; `with: lower_bound` (or `upper_bound`) makes it pass
only if that bound of the interval (of the paired difference when the rule names `baseline`) does.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from corral.errors import InvalidInputError
from corral.evaluate.stats import Difference

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(r"^\s*([A-Za-z_][\w:.-]*)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
_RHS = [
    (re.compile(rf"^({_NUMBER})$"), lambda g: (0.0, 0.0, float(g[0]))),
    (re.compile(r"^baseline$"), lambda g: (1.0, 0.0, 0.0)),
    (
        re.compile(rf"^baseline\s*([-+])\s*({_NUMBER})$"),
        lambda g: (1.0, 0.0, float(g[1]) * (-1 if g[0] == "-" else 1)),
    ),
    (re.compile(rf"^({_NUMBER})\s*\*\s*baseline$"), lambda g: (float(g[0]), 0.0, 0.0)),
    (re.compile(rf"^baseline\s*\*\s*({_NUMBER})$"), lambda g: (float(g[0]), 0.0, 0.0)),
]


@dataclass(frozen=True)
class Rule:
    """`metric op scale * baseline + offset`; scale 0 means a constant threshold."""

    text: str
    metric: str
    op: str
    scale: float
    offset: float
    bound: str = "point"  # point | lower_bound | upper_bound

    @property
    def uses_baseline(self) -> bool:
        return self.scale != 0.0


@dataclass(frozen=True)
class Gate:
    against: str
    dataset: str
    split: str
    rules: list[Rule]
    metrics: list[str] = field(default_factory=list)  # evaluated besides those the rules name


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    candidate: float
    baseline: float | None
    threshold: float
    compared: float  # the value held against the threshold (a point estimate or a bound)
    diff_low: float | None
    diff_high: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: list[RuleResult]

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if not r.passed]


def parse_rule(raw: Any, index: int) -> Rule:
    where = f"rules[{index}]"
    bound = "point"
    if isinstance(raw, dict):
        if "rule" not in raw or set(raw) - {"rule", "with"}:
            raise InvalidInputError(
                f"{where}: a rule mapping has keys 'rule' and optionally 'with', got {sorted(raw)}"
            )
        bound = str(raw.get("with", "point"))
        if bound not in ("point", "lower_bound", "upper_bound"):
            raise InvalidInputError(f"{where}: 'with' must be lower_bound or upper_bound, not {bound!r}")
        raw = raw["rule"]
    if not isinstance(raw, str):
        raise InvalidInputError(f"{where}: a rule is a string like 'exact_match >= baseline - 0.01'")
    found = _RULE.match(raw)
    if not found:
        raise InvalidInputError(
            f"{where} '{raw}' does not parse", hint="write METRIC OP EXPR, e.g. 'exact_match >= 0.9'"
        )
    metric, op, rhs = found.groups()
    for pattern, build in _RHS:
        hit = pattern.match(rhs)
        if hit:
            scale, _, offset = build(hit.groups())
            return Rule(raw, metric, op, scale, offset, bound)
    raise InvalidInputError(
        f"{where} '{raw}': cannot read the right-hand side '{rhs}'",
        hint="use a number, baseline, baseline + N, baseline - N, or N * baseline",
    )


def parse_gate(data: Any, source: str = "gate") -> Gate:
    """Check a gate mapping completely; an error names the file, the key or rule, and the problem."""
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source}: a gate is a mapping with against, dataset, split and rules")
    unknown = set(data) - {"against", "dataset", "split", "rules", "metrics"}
    if unknown:
        raise InvalidInputError(f"{source}: unknown keys {sorted(unknown)}")
    for key in ("dataset", "rules"):
        if key not in data:
            raise InvalidInputError(f"{source}: '{key}' is required")
    rules = data["rules"]
    if not isinstance(rules, list) or not rules:
        raise InvalidInputError(f"{source}: 'rules' must be a non-empty list")
    try:
        parsed = [parse_rule(raw, i) for i, raw in enumerate(rules)]
    except InvalidInputError as exc:
        raise InvalidInputError(f"{source}: {exc.message}", hint=exc.hint) from None
    extra = data.get("metrics") or []
    return Gate(
        str(data.get("against", "production")),
        str(data["dataset"]),
        str(data.get("split", "test")),
        parsed,
        [str(x) for x in extra],
    )


def load_gate(path: str | Path) -> Gate:
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"gate file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_gate(data, str(path))


def _bounds(
    rule: Rule, cand: dict[str, Any], base: dict[str, Any] | None, diff: Difference | None
) -> tuple[float, float | None, float | None]:
    """The value to compare and the difference interval, for the rule's bound."""
    low = high = None
    if rule.uses_baseline and diff is not None:
        low, high = diff.low, diff.high
    if rule.bound == "point":
        return float(cand["value"]), low, high
    if rule.uses_baseline:
        assert base is not None and low is not None and high is not None
        return float(base["value"]) + (low if rule.bound == "lower_bound" else high), low, high
    return float(cand["low" if rule.bound == "lower_bound" else "high"]), low, high


def verdict(
    rules: list[Rule],
    candidate: dict[str, Any],
    baseline: dict[str, Any],
    differences: dict[str, Difference] | None = None,
) -> GateVerdict:
    """Pass or fail on each rule from the two summaries ({metric: {value, low, high, ...}}) alone."""
    differences = differences or {}
    results = []
    for rule in rules:
        cand, base = candidate.get(rule.metric), baseline.get(rule.metric)
        if cand is None or (rule.uses_baseline and base is None):
            missing = "the candidate" if cand is None else "the baseline"
            results.append(
                RuleResult(
                    rule,
                    math.nan,
                    None,
                    math.nan,
                    math.nan,
                    None,
                    None,
                    False,
                    f"{rule.metric} was not measured on {missing}",
                )
            )
            continue
        base_value = float(base["value"]) if base is not None else None
        threshold = rule.scale * (base_value or 0.0) + rule.offset
        compared, low, high = _bounds(rule, cand, base, differences.get(rule.metric))
        passed = not math.isnan(compared) and OPS[rule.op](compared, threshold)
        what = "value" if rule.bound == "point" else rule.bound.replace("_", " ")
        reason = f"{rule.metric} {what} {compared:.4g} {'satisfies' if passed else 'fails'} {rule.op} {threshold:.4g}"
        results.append(
            RuleResult(rule, float(cand["value"]), base_value, threshold, compared, low, high, passed, reason)
        )
    return GateVerdict(all(r.passed for r in results), results)
