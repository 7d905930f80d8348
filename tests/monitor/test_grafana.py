"""The shipped Grafana dashboard is valid JSON and only charts metrics that corral exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from corral.gateway.metrics import GatewayMetrics

ROOT = Path(__file__).parents[2]


def test_grafana_dashboard_charts_only_metrics_that_exist():
    dashboard = json.loads((ROOT / "deploy/grafana/corral-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(total|bucket)$", "", m) for e in exprs for m in re.findall(r"corral_[a-z_]+", e)}
    gateway = GatewayMetrics().render().decode()
    engine = (ROOT / "src/corral/engine/metrics.py").read_text()
    missing = [m for m in used if m not in gateway and f'"{m}"' not in engine]
    assert not missing, f"the dashboard charts metrics nobody exports: {missing}"
    assert {p["id"] for p in dashboard["panels"]} == set(range(1, len(dashboard["panels"]) + 1))
