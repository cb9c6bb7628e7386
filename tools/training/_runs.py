"""The MLflow record of training: provenance, one parent run and one nested run per candidate.

``train_candidates`` opens a parent run tagged with the lineage of the data, spec, code
and environment, fits each planned candidate (``_search``) in a nested run that logs its
parameters, scores, dataset inputs, artifacts and model, then tags the best candidate. A
run that starts and then fails ends FAILED with the reason in the tag ``mlops.failure_reason``.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_supervisor.policies import Redactor
from mlops_supervisor.tools._spec import LoadedSpec, PipelineSpec
from mlops_supervisor.tools.core import ProgressFactory, foreign_types
from mlops_supervisor.tools.training._search import (
    CandidateFit,
    SearchPlan,
    TrainingData,
    fit_candidate,
    prepare_training_data,
)

__all__ = [
    "CandidateOutcome",
    "TrainingContext",
    "choose_best",
    "code_version",
    "environment",
    "lineage_tags",
    "log_candidate_run",
    "model_requirements",
    "train_candidates",
    "trusted_types",
]

_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "mlflow", "skops")


# --- provenance ---------------------------------------------------------------------------


# A spec's directory may be someone else's checkout: its own git config must not run commands
# here (core.fsmonitor names a program that `git status` runs; hooks likewise).
_GIT = ("git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


def code_version(directory: Path) -> dict[str, str]:
    """The git commit of ``directory`` (and whether the tree has changes), when it is a git checkout."""
    try:
        commit = subprocess.run(
            [*_GIT, "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*_GIT, "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "none", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": "true" if dirty else "false"}


def environment() -> dict[str, Any]:
    """Python, platform and the versions of the packages a trained model depends on."""
    packages = {}
    for name in (*_PACKAGES, "mlops-supervisor"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": packages}


def model_requirements(env: dict[str, Any]) -> list[str]:
    """Pinned requirements of a logged model, stated instead of inferred: inference imports the model
    in a subprocess, which costs seconds per candidate and finds the same packages."""
    return [f"{name}=={env['packages'][name]}" for name in ("scikit-learn", "pandas", "numpy", "scipy", "skops")]


def trusted_types(model: Any) -> list[str]:
    """The types skops must be told to trust to load ``model``: only numpy, scipy and sklearn ones."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = foreign_types(list(untrusted))
    if foreign:
        raise RuntimeError(f"the fitted model holds types outside numpy, scipy and sklearn: {foreign}")
    return list(untrusted)


@dataclass(frozen=True)
class TrainingContext:
    """Everything one training call records alongside the models."""

    loaded: LoadedSpec
    data_digest: str
    split_key: str
    split_digests: dict[str, str]
    dataset_path: Path
    features: list[str]
    reports: dict[str, Any]
    redactor: Redactor
    n_jobs: int | None
    progress: ProgressFactory


def lineage_tags(
    ctx: TrainingContext, classes: list[Any] | None, env: dict[str, Any], code: dict[str, str]
) -> dict[str, str]:
    """The tags every run of a training call carries: spec, data, split, code, environment and target."""
    spec = ctx.loaded.spec
    tags = {
        "mlops.pipeline": spec.name,
        "mlops.spec.digest": ctx.loaded.digest,
        "mlops.data.digest": ctx.data_digest,
        "mlops.data.source": ctx.redactor.redact_text(ctx.loaded.resolve_source()),
        **{f"mlops.split.{name}.digest": digest for name, digest in ctx.split_digests.items()},
        "mlops.split.key": ctx.split_key,
        "mlops.dataset.path": str(ctx.dataset_path),
        "mlops.code.git_commit": code["git_commit"],
        "mlops.code.git_dirty": code["git_dirty"],
        "mlops.code.version": env["packages"]["mlops-supervisor"],
        "mlops.env.python": env["python"],
        "mlops.env.sklearn": env["packages"]["scikit-learn"],
        "mlops.seed": str(spec.seed),
        "mlops.task": spec.training.task,
        "mlops.target": spec.data.target,
        "mlops.metric": spec.training.metric,
    }
    if classes is not None:
        tags["mlops.target.classes"] = json.dumps([str(c) for c in classes])
    return tags


def _dataset_inputs(ctx: TrainingContext, splits: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The training and validation splits as MLflow datasets, keyed by the context they are logged under."""
    from mlflow.data.pandas_dataset import from_pandas

    spec = ctx.loaded.spec
    with warnings.catch_warnings():
        # MLflow registers its local-file source for two URI schemes, so every local path
        # "can be interpreted in multiple ways" -- both ways are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return {
            context: from_pandas(
                splits[name],
                source=str(ctx.dataset_path),
                targets=spec.data.target,
                name=f"{spec.name}-{name}",
                digest=ctx.split_digests[name][:32],
            )
            for context, name in (("training", "train"), ("validation", "validation"))
        }


@dataclass(frozen=True)
class _Provenance:
    """What the runs of one training call record besides their own results."""

    tags: dict[str, str]
    spec_text: str
    env: dict[str, Any]
    datasets: dict[str, Any]


def _provenance(ctx: TrainingContext, data: TrainingData, splits: dict[str, pd.DataFrame]) -> _Provenance:
    """Lineage tags, the redacted spec text, the environment and the dataset inputs of this call."""
    env = environment()
    tags = lineage_tags(ctx, data.classes, env, code_version(ctx.loaded.path.parent))
    spec_text = ctx.redactor.redact_text(ctx.loaded.text)
    return _Provenance(tags=tags, spec_text=spec_text, env=env, datasets=_dataset_inputs(ctx, splits))


# --- the runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateOutcome:
    """What one candidate's run produced: its best parameters, scores, run and model."""

    candidate: str
    estimator: str
    run_id: str
    model_uri: str
    params: dict[str, Any]
    cv: dict[str, float]
    validation: dict[str, float]
    greater_is_better: bool

    def as_record(self) -> dict[str, Any]:
        """The outcome as the tool reports it (without the ranking direction)."""
        return {
            "candidate": self.candidate,
            "estimator": self.estimator,
            "run_id": self.run_id,
            "model_uri": self.model_uri,
            "params": self.params,
            "cv": self.cv,
            "validation": self.validation,
        }


def _log_training_run(ctx: TrainingContext, record: _Provenance, candidates: int) -> None:
    """The parent run's parameters, the redacted spec, the environment and the data reports."""
    import mlflow

    spec = ctx.loaded.spec
    mlflow.log_params(
        {
            "seed": spec.seed,
            "candidates": candidates,
            "search.strategy": spec.training.search.strategy,
            "cv.folds": spec.training.search.cv_folds,
            "features": len(ctx.features),
        }
    )
    mlflow.log_text(record.spec_text, "spec.yaml")
    mlflow.log_dict(record.env, "environment.json")
    for name, report in ctx.reports.items():
        mlflow.log_dict(report, f"data/{name}.json")


def _train_candidate(
    ctx: TrainingContext,
    plan: SearchPlan,
    data: TrainingData,
    record: _Provenance,
    *,
    experiment_id: str,
    active: list[Any],
    advance: Callable[[str], None],
) -> CandidateOutcome:
    """Fit ``plan`` inside its own nested run and log it; the run sits on ``active`` while it is open."""
    import mlflow

    child = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=plan.candidate.name,
        nested=True,
        tags={**record.tags, "mlops.role": "candidate", "mlops.candidate": plan.candidate.name},
    )
    active.append(child)
    fit = fit_candidate(plan, data, ctx.loaded.spec, ctx.n_jobs, advance)
    outcome = log_candidate_run(child.info.run_id, plan, fit, data, ctx.loaded.spec, record, ctx.redactor)
    mlflow.end_run()
    active.pop()
    return outcome


def log_candidate_run(
    run_id: str,
    plan: SearchPlan,
    fit: CandidateFit,
    data: TrainingData,
    spec: PipelineSpec,
    record: _Provenance,
    redactor: Redactor,
) -> CandidateOutcome:
    """Log one fitted candidate to the active run ``run_id``: parameters, scores, inputs, artifacts, model."""
    _log_candidate_record(plan, fit, spec, record)
    model_uri = _log_model(fit.model, data, redactor, record.env)
    return CandidateOutcome(
        candidate=plan.candidate.name,
        estimator=plan.candidate.estimator,
        run_id=run_id,
        model_uri=model_uri,
        params={**plan.candidate.params, **fit.best["params"]},
        cv={k.removeprefix("cv_"): v for k, v in fit.best.items() if k.startswith("cv_") and not k.endswith("_std")},
        validation={k.removeprefix("val_"): v for k, v in fit.validation.items()},
        greater_is_better=fit.greater_is_better,
    )


def _log_candidate_record(plan: SearchPlan, fit: CandidateFit, spec: PipelineSpec, record: _Provenance) -> None:
    """The candidate run's parameters, metrics, dataset inputs, spec, environment and search results."""
    import mlflow

    params = {**plan.candidate.params, **fit.best["params"]}
    mlflow.log_params(
        {
            "estimator": plan.candidate.estimator,
            "seed": spec.seed,
            "search.combinations": len(plan.combos),
            "cv.folds": spec.training.search.cv_folds,
            **{f"model.{k}": v for k, v in sorted(params.items())},
        }
    )
    mlflow.log_metrics(
        {**{k: v for k, v in fit.best.items() if k.startswith("cv_")}, **fit.validation, "fit_seconds": fit.seconds}
    )
    for context, dataset in record.datasets.items():
        mlflow.log_input(dataset, context=context)
    mlflow.log_text(record.spec_text, "spec.yaml")
    mlflow.log_dict(record.env, "environment.json")
    mlflow.log_dict({"metric": spec.training.metric, "combinations": fit.results}, "search_results.json")


def _log_model(model: Any, data: TrainingData, redactor: Redactor, env: dict[str, Any]) -> str:
    """Log ``model`` with its signature, a redacted input example and pinned requirements; its model URI."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    example = _redacted_example(data.x_train, redactor)
    with warnings.catch_warnings():
        # class indices are integers and never missing; the hint is about inputs
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(data.x_train.head(200), model.predict(data.x_train.head(200)))
    logged = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=model_requirements(env),
        serialization_format="skops",
        skops_trusted_types=trusted_types(model),
    )
    model_uri: str = logged.model_uri
    return model_uri


def _redacted_example(frame: pd.DataFrame, redactor: Redactor, rows: int = 5) -> pd.DataFrame:
    """The first ``rows`` rows of ``frame`` with every text value redacted."""
    example = frame.head(rows).copy()
    # MLflow compares the column index with a range; on pandas 3's Arrow-backed string
    # index that comparison is deprecated (Pandas4Warning), on a plain object index it is not.
    example.columns = pd.Index(list(example.columns), dtype=object)
    for column in example.columns:
        if not pd.api.types.is_numeric_dtype(example[column]):
            example[column] = example[column].map(lambda v: v if pd.isna(v) else redactor.redact_text(str(v)))
    return example


def choose_best(outcomes: list[CandidateOutcome], metric: str) -> CandidateOutcome:
    """The candidate with the best validation ``metric``; a tie goes to the name that sorts last."""
    sign = 1.0 if outcomes[0].greater_is_better else -1.0
    return max(outcomes, key=lambda o: (sign * o.validation[metric], o.candidate))


def _tag_best(outcomes: list[CandidateOutcome], best: CandidateOutcome, metric: str) -> None:
    """Mark every candidate run best or not, and record the best on the active parent run."""
    import mlflow

    client = mlflow.tracking.MlflowClient()
    for outcome in outcomes:
        client.set_tag(outcome.run_id, "mlops.best", "true" if outcome is best else "false")
    mlflow.set_tags({"mlops.best.run_id": best.run_id, "mlops.best.candidate": best.candidate})
    mlflow.log_metric(f"best_val_{metric}", best.validation[metric])


def _end_failed(active: list[Any], exc: BaseException, redactor: Redactor) -> None:
    """End every run on ``active``, innermost first, as FAILED with the redacted reason tagged."""
    import mlflow

    reason = redactor.redact_text(f"{type(exc).__name__}: {exc}")[:4000]
    while active:
        run = active.pop()
        mlflow.tracking.MlflowClient().set_tag(run.info.run_id, "mlops.failure_reason", reason)
        mlflow.end_run(status="FAILED")


def train_candidates(
    ctx: TrainingContext, plans: list[SearchPlan], splits: dict[str, pd.DataFrame], *, experiment_id: str
) -> dict[str, Any]:
    """Fit, score and log every candidate under one parent run; the run ids and the best candidate."""
    import mlflow

    spec = ctx.loaded.spec
    metric = spec.training.metric
    data = prepare_training_data(splits, spec, ctx.features)
    record = _provenance(ctx, data, splits)
    total = sum(len(p.combos) for p in plans)
    parent = mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{spec.name}-train", tags={**record.tags, "mlops.role": "training"}
    )
    active = [parent]
    try:
        _log_training_run(ctx, record, len(plans))
        with ctx.progress(f"training {len(plans)} candidates of {spec.name}", total) as advance:
            outcomes = [
                _train_candidate(ctx, plan, data, record, experiment_id=experiment_id, active=active, advance=advance)
                for plan in plans
            ]
        best = choose_best(outcomes, metric)
        _tag_best(outcomes, best, metric)
        mlflow.end_run()
    except BaseException as exc:
        _end_failed(active, exc, ctx.redactor)
        raise
    return {
        "experiment_id": experiment_id,
        "parent_run_id": parent.info.run_id,
        "data_digest": ctx.data_digest,
        "metric": metric,
        "candidates": [o.as_record() for o in outcomes],
        "best": {"candidate": best.candidate, "run_id": best.run_id, metric: best.validation[metric]},
    }
