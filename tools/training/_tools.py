"""The experimentation agent's tools: train the spec's candidates on the versioned split, list runs."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools._spec import LoadedSpec, load_spec
from mlops_supervisor.tools.core import GovernedTool, SpecArgs, ToolContext, ensure_experiment, to_json, using_store
from mlops_supervisor.tools.data import datasets_dir, feature_columns, read_pointer
from mlops_supervisor.tools.training._runs import TrainingContext, train_candidates
from mlops_supervisor.tools.training._search import plan_search

__all__ = ["experimentation_tools", "list_runs", "train_model"]


class _ExperimentArgs(BaseModel):
    experiment: str = Field(description="MLflow experiment name (the spec's name by default)")
    limit: int = Field(default=20, ge=1, le=200, description="most recent runs to list")


def train_model(ctx: ToolContext, spec: str) -> str:
    """Train the spec's candidates on its current split and log them to MLflow; run ids and the best, as JSON."""
    loaded = load_spec(spec)
    plans = plan_search(loaded.spec, ctx.policy.training)
    context, splits = _training_context(ctx, loaded)
    tracking_uri = ctx.store_uri
    with using_store(tracking_uri) as client:
        experiment_id = ensure_experiment(
            client, loaded.spec.experiment_name, workspace=ctx.workspace, tracking_uri=tracking_uri
        )
        result = train_candidates(context, plans, splits, experiment_id=experiment_id)
    return to_json({**result, "tracking_uri": ctx.redactor.redact_text(tracking_uri)})


def _training_context(ctx: ToolContext, loaded: LoadedSpec) -> tuple[TrainingContext, dict[str, pd.DataFrame]]:
    """The train and validation splits the spec's pointer names, and what their runs record about them."""
    pointer = read_pointer(ctx, loaded, "split_key")
    home = datasets_dir(ctx) / pointer["dataset_digest"]
    split_dir = home / "splits" / pointer["split_key"]
    splits = {n: pd.read_parquet(split_dir / f"{n}.parquet") for n in ("train", "validation")}
    dataset = _read_json(home / "dataset.json")
    split_facts = _read_json(split_dir / "split.json")
    features = feature_columns(
        splits["train"],
        target=loaded.spec.data.target,
        sensitive=loaded.spec.data.sensitive_features,
        use_sensitive=loaded.spec.training.use_sensitive_features,
        checks=dataset["validation"],
    )
    context = TrainingContext(
        loaded=loaded,
        data_digest=pointer["dataset_digest"],
        split_key=pointer["split_key"],
        split_digests=split_facts["digests"],
        dataset_path=home / "data.parquet",
        features=features,
        reports={
            "validation_report": dataset["validation"],
            "pii_report": dataset["pii"],
            "reference_profile": _read_json(split_dir / "reference_profile.json"),
        },
        redactor=ctx.redactor,
        n_jobs=ctx.n_jobs,
        progress=ctx.progress,
    )
    return context, splits


def _read_json(path: Path) -> Any:
    """The JSON document at ``path``."""
    return json.loads(path.read_text("utf-8"))


def list_runs(ctx: ToolContext, experiment: str, limit: int = 20) -> str:
    """The ``limit`` most recent runs of ``experiment`` with status, role, metrics and failure reason, as JSON."""
    with using_store(ctx.store_uri) as client:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = [e.name for e in client.search_experiments(max_results=50)]
            raise InvalidInputError(
                "unknown_experiment", f"no MLflow experiment {experiment!r}; experiments: {', '.join(names)}"
            )
        runs = client.search_runs([found.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
    return to_json([_run_record(r) for r in runs])


def _run_record(run: Any) -> dict[str, Any]:
    """One run as list_runs reports it."""
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "role": run.data.tags.get("mlops.role"),
        "best": run.data.tags.get("mlops.best"),
        "metrics": {k: round(v, 6) for k, v in sorted(run.data.metrics.items())},
        "failure_reason": run.data.tags.get("mlops.failure_reason"),
    }


def experimentation_tools(ctx: ToolContext) -> list[GovernedTool]:
    """train_model and list_runs, bound to ``ctx``."""
    return [
        GovernedTool.from_function(
            "train_model",
            "Train the spec's allow-listed candidates with a seeded, cross-validated search and "
            "log every candidate to MLflow; returns run ids and the best candidate.",
            SpecArgs,
            partial(train_model, ctx),
            mutates=True,
        ),
        GovernedTool.from_function(
            "list_runs",
            "List the recent runs of an MLflow experiment with their metrics and status.",
            _ExperimentArgs,
            partial(list_runs, ctx),
            mutates=False,
        ),
    ]
