"""Optional MLflow logging: when MLFLOW_TRACKING_URI is set, params, metrics and the final model go there too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corral.errors import ConfigError


class MLflowRun:
    """Logs to MLflow when MLFLOW_TRACKING_URI is set; otherwise every method does nothing."""

    def __init__(self, run_name: str, params: dict[str, Any], enabled: bool = True) -> None:
        self.mlflow: Any = None
        if not enabled or not os.environ.get("MLFLOW_TRACKING_URI"):
            return
        try:
            import mlflow
        except ModuleNotFoundError:
            raise ConfigError(
                "MLFLOW_TRACKING_URI is set but mlflow is not installed",
                hint="pip install mlflow, or unset MLFLOW_TRACKING_URI",
            ) from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        mlflow.start_run(run_name=run_name)
        mlflow.log_params(_flat(params))

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.mlflow is not None:
            self.mlflow.log_metrics(metrics, step=step)

    def finish(self, model_dir: Path | None, tags: dict[str, str]) -> None:
        if self.mlflow is None:
            return
        if model_dir is not None:
            self.mlflow.log_artifacts(str(model_dir), artifact_path="model")
        self.mlflow.set_tags(tags)
        self.mlflow.end_run()

    def fail(self) -> None:
        if self.mlflow is not None:
            self.mlflow.end_run(status="FAILED")


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
