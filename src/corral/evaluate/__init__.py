"""Evaluation: metrics, runner, judge, statistics, comparisons and gates.

import corral.evaluate as ev
result = ev.run("starter@production", "support@1", ["exact_match", "rouge"])
ev.compare(run_a.id, run_b.id).differences["exact_match"]
ev.gate("starter@2", "gate.yaml").passed
"""

from corral.evaluate.compare import Comparison, GateOutcome, compare, compare_runs, gate
from corral.evaluate.gates import Gate, GateVerdict, Rule, load_gate, parse_gate, verdict
from corral.evaluate.metrics import METRICS, normalize
from corral.evaluate.runner import RunOptions, run
from corral.evaluate.runs import EvalRun, runs_of
from corral.evaluate.stats import Difference, Estimate
from corral.evaluate.target import TargetSpec, kept_workers

__all__ = [
    "METRICS",
    "Comparison",
    "Difference",
    "Estimate",
    "EvalRun",
    "Gate",
    "GateOutcome",
    "GateVerdict",
    "Rule",
    "RunOptions",
    "TargetSpec",
    "compare",
    "compare_runs",
    "gate",
    "kept_workers",
    "load_gate",
    "normalize",
    "parse_gate",
    "run",
    "runs_of",
    "verdict",
]
