"""Optional MLflow logging: when a tracking URI is configured, params, metrics and the final model go there too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corral.errors import ConfigError


def tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI, else `tracing.mlflow_tracking_uri`: the one setting evaluation reads too."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from corral.config import load_settings

    return load_settings().tracing.mlflow_uri()


class MLflowRun:
    """Logs to MLflow when a tracking URI is configured; otherwise every method does nothing."""

    def __init__(self, run_name: str, params: dict[str, Any], enabled: bool = True) -> None:
        self.mlflow: Any = None
        uri = tracking_uri() if enabled else None
        if not uri:
            return
        try:
            import mlflow
        except ModuleNotFoundError:
            raise ConfigError(
                "an MLflow tracking URI is set but mlflow is not installed",
                hint="pip install 'corral[mlflow]', or unset MLFLOW_TRACKING_URI / tracing.mlflow_tracking_uri",
            ) from None
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
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
