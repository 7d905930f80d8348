"""Optional MLflow logging: with `tracing.mlflow_tracking_uri` (or MLFLOW_TRACKING_URI) set, params,
metrics and the final model go there too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corral.tracking import import_mlflow


def tracking_uri() -> str | None:
    """`tracing.mlflow_tracking_uri`, else MLFLOW_TRACKING_URI (the setting wins, as in training)."""
    from corral.config import load_settings

    return load_settings().tracing.mlflow_uri()


class MLflowRun:
    """Logs to MLflow at `uri` (the setting), else at MLFLOW_TRACKING_URI; with neither, does nothing."""

    def __init__(
        self, run_name: str, params: dict[str, Any], enabled: bool = True, uri: str | None = None
    ) -> None:
        self.mlflow: Any = None
        source = "tracing.mlflow_tracking_uri" if uri else "MLFLOW_TRACKING_URI"
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not enabled or not uri:
            return
        mlflow = import_mlflow(source)
        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)  # the setting wins over the variable
        # MLflow's Default experiment, named by id: whatever experiment some earlier code in this
        # process made active may not exist in this tracking store.
        mlflow.start_run(run_name=run_name, experiment_id=DEFAULT_EXPERIMENT_ID)
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


DEFAULT_EXPERIMENT_ID = "0"


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
