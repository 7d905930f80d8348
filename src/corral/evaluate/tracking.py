"""MLflow logging of evaluation runs: params, metrics with their intervals, and the HTML report."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from corral.evaluate.runs import EvalRun
from corral.tracking import experiment_id, import_mlflow

EXPERIMENT = "corral-evaluation"


def _metric_key(name: str) -> str:
    return name.replace(":", "_")  # MLflow keys allow letters, digits, _ - . / and spaces


def log_runs(results: list[EvalRun], settings: Any) -> list[str]:
    """Log each run to MLflow when a tracking URI is configured; returns the MLflow run ids."""
    uri = settings.tracing.mlflow_uri()
    if not uri:
        return []
    mlflow = import_mlflow("MLFLOW_TRACKING_URI / tracing.mlflow_tracking_uri")
    from corral.evaluate.report import write_report

    mlflow.set_tracking_uri(uri)
    experiment = experiment_id(mlflow, EXPERIMENT)
    ids = []
    for result in results:
        with mlflow.start_run(
            run_name=f"eval {result.target} {result.id[:8]}", experiment_id=experiment
        ) as active:
            mlflow.log_params(
                {
                    "target": result.target,
                    "dataset": result.dataset,
                    "split": result.split,
                    "metrics": ",".join(result.metrics),
                    "corral_run": result.id,
                    "status": result.status,
                }
            )
            values: dict[str, float] = {}
            for name, entry in result.summary.items():
                for part, suffix in (("value", ""), ("low", "_low"), ("high", "_high")):
                    if isinstance(entry.get(part), float | int) and math.isfinite(entry[part]):
                        values[_metric_key(name) + suffix] = float(entry[part])
            mlflow.log_metrics(values)
            mlflow.set_tags({"corral.eval_run": result.id, "corral.target": result.target})
            with tempfile.TemporaryDirectory(prefix="corral-eval-report-") as tmp:
                report = write_report([result], Path(tmp) / "report.html")
                mlflow.log_artifact(str(report))
            ids.append(active.info.run_id)
    return ids
