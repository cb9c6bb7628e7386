"""What an evaluation reads: the registered version, its training run and spec, and the test split that run made.

The test split is read back from the workspace and must match the digest the training run
logged, so a version is never scored on rows other than the ones held out for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools._spec import PipelineSpec
from mlops_supervisor.tools.data import dataset_digest
from mlops_supervisor.tools.registry import model_version, training_spec

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

__all__ = ["EvaluationInputs", "read_inputs"]


@dataclass(frozen=True)
class EvaluationInputs:
    """A registered version, its tags, its training run, the spec that run used and its test split."""

    model_version: ModelVersion
    tags: dict[str, str]
    run: Run
    spec: PipelineSpec
    test: pd.DataFrame

    @property
    def model_uri(self) -> str:
        """Where the registered version's model is logged."""
        # typed optional because ModelVersion's constructor defaults it, but registering a version requires one
        return str(self.model_version.source)

    @property
    def classes(self) -> list[str] | None:
        """The target's classes in the order the model indexes them; ``None`` for a regression."""
        raw = self.tags.get("mlops.target.classes")
        return None if raw is None else list(json.loads(raw))

    @property
    def classification(self) -> bool:
        """Whether the spec trains a classifier."""
        return self.spec.training.task == "classification"


def read_inputs(client: MlflowClient, workspace: Path, model: str, version: int) -> EvaluationInputs:
    """What evaluating ``model`` ``version`` needs; ``InvalidInputError`` when any of it is missing or does not match."""
    mv = model_version(client, model, version)
    tags = dict(mv.tags)
    run_id = tags.get("mlops.training.run_id")
    if not run_id:
        raise InvalidInputError("evidence_missing", f"{model} version {version} names no training run")
    run = client.get_run(run_id)
    spec = training_spec(client, run_id)
    rt = run.data.tags
    split_dir = Path(workspace) / "datasets" / rt["mlops.data.digest"] / "splits" / rt["mlops.split.key"]
    test_path = split_dir / "test.parquet"
    if not test_path.exists():
        raise InvalidInputError(
            "evidence_missing",
            f"the test split of {model} version {version} is not in this "
            f"workspace ({test_path}); run the data stage of its spec here",
        )
    test = pd.read_parquet(test_path)
    if dataset_digest(test) != rt.get("mlops.split.test.digest"):
        raise InvalidInputError(
            "evidence_inconsistent",
            f"the test split at {test_path} does not match the digest its training run logged",
        )
    return EvaluationInputs(model_version=mv, tags=tags, run=run, spec=spec, test=test)
