"""The MLflow store of a workspace: the embedded SQLite default, or a server named by the user.

MLflow's logging functions read a process-wide tracking URI. ``using_store`` sets ours for
the length of one tool call and puts back whatever the caller had (a notebook's own
``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI`` included).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["default_tracking_uri", "ensure_experiment", "using_store"]


def default_tracking_uri(workspace: Path) -> str:
    """The embedded default: a SQLite database inside the workspace."""
    return f"sqlite:///{Path(workspace).absolute() / 'mlflow.db'}"


def artifact_root(workspace: Path) -> str:
    """Where runs in the embedded store keep their artifacts."""
    return (Path(workspace).absolute() / "mlartifacts").as_uri()


@contextmanager
def using_store(tracking_uri: str) -> Iterator[Any]:
    """Point MLflow at ``tracking_uri`` (tracking and registry) and yield a client on it."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_tracking = tracking_utils._tracking_uri
    old_registry = registry_utils._registry_uri
    old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    finally:
        mlflow.set_tracking_uri(old_tracking)  # type: ignore[arg-type]  # None restores 'not set'
        registry_utils._registry_uri = old_registry
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_experiment(client: Any, name: str, *, workspace: Path, tracking_uri: str) -> str:
    """The id of experiment ``name``, created on first use (artifacts inside the workspace when embedded)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    location = artifact_root(workspace) if tracking_uri == default_tracking_uri(workspace) else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)
