"""The one way corral reaches MLflow (an optional dependency): import it or say how to install it."""

from __future__ import annotations

from typing import Any

from corral.errors import ConfigError


def import_mlflow(source: str) -> Any:
    """The mlflow module, or a ConfigError naming `source` (the setting that asked for MLflow)."""
    try:
        import mlflow
    except ModuleNotFoundError:
        raise ConfigError(
            f"{source} is set but mlflow is not installed",
            hint=f"pip install 'corral[mlflow]', or unset {source}",
        ) from None
    return mlflow


def experiment_id(mlflow: Any, name: str) -> str:
    """The id of experiment `name` in the current tracking store, created when missing.

    Runs name their experiment by id rather than through `mlflow.set_experiment`, which would leave
    it active for every later run in the process (a training run after an evaluation, say).
    """
    found = mlflow.get_experiment_by_name(name)
    return str(found.experiment_id) if found is not None else str(mlflow.create_experiment(name))
