"""Training behind the experimentation agent: allow-listed estimators, a bounded search, MLflow runs.

``plan_search`` checks a spec against the policy before anything runs (estimator on the
allow-list, parameters the estimator knows and accepts, search within its bounds), so a
bad spec starts no MLflow run at all. ``train_candidates`` then fits every candidate in a
preprocessing pipeline, cross-validates a seeded search, refits the best parameters and
logs one nested run per candidate. A run that starts and then fails ends FAILED with the
reason in the tag ``mlops.failure_reason``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError, Redactor
from mlops_supervisor.policies.policy import TrainingRules
from mlops_supervisor.tools._spec import Candidate, LoadedSpec, PipelineSpec, search_size
from mlops_supervisor.tools.core import ProgressFactory

__all__ = ["SearchPlan", "TrainingData", "code_version", "environment", "plan_search", "train_candidates"]

# Estimators whose categorical inputs are ordinal-encoded (trees split on codes); the rest
# get one-hot columns. GaussianNB cannot take sparse input.
_TREES = ("sklearn.tree.", "sklearn.ensemble.")
_DENSE_ONLY = ("sklearn.naive_bayes.GaussianNB",)

# metric -> (binary scorer, multiclass scorer); regression metrics have one scorer.
_CLASSIFICATION_SCORERS = {
    "roc_auc": ("roc_auc", "roc_auc_ovr"),
    "accuracy": ("accuracy", "accuracy"),
    "balanced_accuracy": ("balanced_accuracy", "balanced_accuracy"),
    "f1": ("f1", "f1_macro"),
    "precision": ("precision", "precision_macro"),
    "recall": ("recall", "recall_macro"),
    "log_loss": ("neg_log_loss", "neg_log_loss"),
}
_REGRESSION_SCORERS = {"rmse": "neg_root_mean_squared_error", "mae": "neg_mean_absolute_error", "r2": "r2"}
_PACKAGES = ("scikit-learn", "pandas", "numpy", "scipy", "mlflow", "skops")
# skops refuses to load types it does not know; ours are only these libraries' own.
_TRUSTED_ROOTS = ("numpy", "scipy", "sklearn")


@dataclass(frozen=True)
class SearchPlan:
    """One candidate, its estimator class and the parameter combinations its search tries."""

    candidate: Candidate
    estimator: type
    combos: tuple[dict[str, Any], ...]
    has_proba: bool


def _import_estimator(path: str) -> type:
    module, _, name = path.rpartition(".")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _build(plan: SearchPlan, params: dict[str, Any], seed: int) -> Any:
    estimator = plan.estimator(**plan.candidate.params, **params)
    if "random_state" in estimator.get_params() and "random_state" not in {**plan.candidate.params, **params}:
        estimator.set_params(random_state=seed)
    return estimator


def plan_search(spec: PipelineSpec, rules: TrainingRules) -> list[SearchPlan]:
    """The search of every candidate, checked against ``rules``; ``InvalidInputError`` before any run."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler
    from sklearn.utils._param_validation import InvalidParameterError

    plans = []
    training = spec.training
    for candidate in training.candidates:
        if candidate.estimator not in rules.estimators:
            raise InvalidInputError(
                "estimator_not_allowed",
                f"candidate {candidate.name!r}: estimator {candidate.estimator} is not allowed by the policy "
                f"(training.estimators); allowed: {', '.join(rules.estimators)}",
            )
        size = search_size(candidate, training.search)
        if size > rules.max_search_candidates:
            raise InvalidInputError(
                "search_space_too_large",
                f"candidate {candidate.name!r}: the search tries {size} parameter combinations, over the policy's "
                f"training.max_search_candidates of {rules.max_search_candidates}; shrink search_space or use "
                "strategy: random with a smaller n_iter",
            )
        cls = _import_estimator(candidate.estimator)
        known = set(cls().get_params())
        unknown = sorted((set(candidate.params) | set(candidate.search_space)) - known)
        if unknown:
            raise InvalidInputError(
                "unknown_parameter",
                f"candidate {candidate.name!r}: {candidate.estimator.rsplit('.', 1)[1]} has no parameter "
                f"{', '.join(unknown)}; it has: {', '.join(sorted(known))}",
            )
        space = {k: list(v) for k, v in candidate.search_space.items()}
        if not space:
            combos: list[dict[str, Any]] = [{}]
        elif training.search.strategy == "grid":
            combos = list(ParameterGrid(space))
        else:
            combos = list(ParameterSampler(space, n_iter=size, random_state=spec.seed))
        plan = SearchPlan(candidate, cls, tuple(combos), has_proba=False)
        for combo in combos:
            estimator = _build(plan, combo, spec.seed)
            try:
                estimator._validate_params()
            except InvalidParameterError as exc:
                raise InvalidInputError(
                    "invalid_parameter", f"candidate {candidate.name!r} with {combo or 'its params'}: {exc}"
                ) from None
        has_proba = hasattr(_build(plan, combos[0], spec.seed), "predict_proba")
        if training.metric == "log_loss" and not has_proba:
            raise InvalidInputError(
                "metric_unsupported",
                f"candidate {candidate.name!r}: {candidate.estimator} gives no probabilities, so log_loss "
                "cannot rank it; choose another metric or estimator",
            )
        plans.append(SearchPlan(candidate, cls, tuple(combos), has_proba))
    fits = sum((len(p.combos) * training.search.cv_folds) + 1 for p in plans)
    if fits > rules.max_fits:
        raise InvalidInputError(
            "search_space_too_large",
            f"the search needs {fits} model fits (combinations x {training.search.cv_folds} folds + refits), over "
            f"the policy's training.max_fits of {rules.max_fits}",
        )
    return plans


# --- features and target ------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """Split frames, the feature columns and the encoded targets."""

    x_train: pd.DataFrame
    y_train: np.ndarray
    x_validation: pd.DataFrame
    y_validation: np.ndarray
    classes: list[Any] | None

    @property
    def binary(self) -> bool:
        """Two classes."""
        return self.classes is not None and len(self.classes) == 2


def prepare_training_data(splits: dict[str, pd.DataFrame], spec: PipelineSpec, features: list[str]) -> TrainingData:
    """Features as the model sees them (numbers and booleans as float64) and the target as numbers.

    Binary targets become 1 for the positive class (``data.positive_class``, else the
    second class in sorted order) and 0 otherwise; multiclass targets become their index
    in sorted order. ``classes`` keeps the mapping.
    """
    target = spec.data.target

    def x(frame: pd.DataFrame) -> pd.DataFrame:
        # Numbers go in as float64: a served request may miss a value, and an integer
        # column in the model's signature could not say so.
        out = frame[features].copy()
        for column in out.columns:
            if pd.api.types.is_bool_dtype(out[column]) or pd.api.types.is_numeric_dtype(out[column]):
                out[column] = out[column].astype("float64")
        return out

    train, validation = splits["train"], splits["validation"]
    if spec.training.task == "regression":
        return TrainingData(
            x(train), train[target].to_numpy(float), x(validation), validation[target].to_numpy(float), None
        )
    classes = sorted(train[target].dropna().unique().tolist(), key=str)
    if len(classes) == 2:
        positive = spec.data.positive_class if spec.data.positive_class is not None else classes[1]
        classes = [c for c in classes if c != positive] + [positive]
    index = {c: i for i, c in enumerate(classes)}
    return TrainingData(
        x(train),
        train[target].map(index).to_numpy(int),
        x(validation),
        validation[target].map(index).to_numpy(int),
        classes,
    )


def _pipeline(plan: SearchPlan, features: pd.DataFrame, params: dict[str, Any], seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    path = plan.candidate.estimator
    if path.startswith(_TREES):
        encoder: Any = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    else:
        encoder = OneHotEncoder(
            handle_unknown="infrequent_if_exist", min_frequency=10, sparse_output=path not in _DENSE_ONLY
        )
    pre = ColumnTransformer(
        [
            ("numeric", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
            (
                "categorical",
                Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("encode", encoder)]),
                categorical,
            ),
        ],
        sparse_threshold=0.0 if path in _DENSE_ONLY else 0.3,
    )
    return Pipeline([("preprocess", pre), ("model", _build(plan, params, seed))])


def _scorers(plan: SearchPlan, spec: PipelineSpec, binary: bool) -> dict[str, str]:
    if spec.training.task == "regression":
        return dict(_REGRESSION_SCORERS)
    scorers = {m: pair[0 if binary else 1] for m, pair in _CLASSIFICATION_SCORERS.items()}
    if not plan.has_proba:
        scorers.pop("log_loss")
    return scorers


def _positive(value: float, scorer: str) -> float:
    """Scores as people read them: losses and errors as positive numbers."""
    return -value if scorer.startswith("neg_") else value


# --- provenance ---------------------------------------------------------------------------


def code_version(directory: Path) -> dict[str, str]:
    """The git commit of ``directory`` (and whether the tree has changes), when it is a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
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
    foreign = [t for t in untrusted if t.split(".", 1)[0] not in _TRUSTED_ROOTS]
    if foreign:
        raise RuntimeError(f"the fitted model holds types outside numpy, scipy and sklearn: {foreign}")
    return list(untrusted)


# --- the training run ---------------------------------------------------------------------


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


def _candidate_fit(
    plan: SearchPlan, data: TrainingData, spec: PipelineSpec, n_jobs: int | None, advance: Callable[[str], None]
) -> dict[str, Any]:
    from sklearn.model_selection import KFold, StratifiedKFold, cross_validate

    folds = spec.training.search.cv_folds
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=spec.seed)
        if spec.training.task == "classification"
        else KFold(folds, shuffle=True, random_state=spec.seed)
    )
    scorers = _scorers(plan, spec, data.binary)
    metric = spec.training.metric
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for combo in plan.combos:
        try:
            scores = cross_validate(
                _pipeline(plan, data.x_train, combo, spec.seed),
                data.x_train,
                data.y_train,
                cv=splitter,
                scoring=scorers,
                n_jobs=n_jobs,
                error_score="raise",
            )
        except ValueError as exc:
            # scikit-learn says ValueError when parameters do not fit the data (say more
            # neighbours than rows): the spec asks for something this data cannot give.
            raise InvalidInputError(
                "training_failed",
                f"candidate {plan.candidate.name!r} with {combo or 'its params'} cannot be fitted: {exc}",
            ) from None
        results.append(
            {
                "params": combo,
                **{f"cv_{m}": round(_positive(float(np.mean(scores[f"test_{m}"])), s), 6) for m, s in scorers.items()},
                **{f"cv_{m}_std": round(float(np.std(scores[f"test_{m}"])), 6) for m in scorers},
            }
        )
        advance(f"{plan.candidate.name} {combo or ''}".strip())
    sign = -1.0 if scorers[metric].startswith("neg_") else 1.0
    best = max(results, key=lambda r: sign * r[f"cv_{metric}"])
    model = _pipeline(plan, data.x_train, best["params"], spec.seed).fit(data.x_train, data.y_train)
    from sklearn.metrics import get_scorer

    validation = {
        f"val_{m}": round(_positive(float(get_scorer(s)(model, data.x_validation, data.y_validation)), s), 6)
        for m, s in scorers.items()
    }
    return {
        "model": model,
        "results": results,
        "best": best,
        "validation": validation,
        "seconds": round(time.perf_counter() - started, 3),
        "greater_is_better": sign > 0,
    }


def _redacted_example(frame: pd.DataFrame, redactor: Redactor, rows: int = 5) -> pd.DataFrame:
    example = frame.head(rows).copy()
    # MLflow compares the column index with a range; on pandas 3's Arrow-backed string
    # index that comparison is deprecated (Pandas4Warning), on a plain object index it is not.
    example.columns = pd.Index(list(example.columns), dtype=object)
    for column in example.columns:
        if not pd.api.types.is_numeric_dtype(example[column]):
            example[column] = example[column].map(lambda v: v if pd.isna(v) else redactor.redact_text(str(v)))
    return example


def train_candidates(
    ctx: TrainingContext, plans: list[SearchPlan], splits: dict[str, pd.DataFrame], *, experiment_id: str
) -> dict[str, Any]:
    """Fit, score and log every candidate under one parent run; the run ids and the best candidate."""
    import mlflow
    import mlflow.sklearn
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.models import infer_signature

    spec = ctx.loaded.spec
    data = prepare_training_data(splits, spec, ctx.features)
    env = environment()
    code = code_version(ctx.loaded.path.parent)
    metric = spec.training.metric
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
        "mlops.metric": metric,
    }
    if data.classes is not None:
        tags["mlops.target.classes"] = json.dumps([str(c) for c in data.classes])
    spec_text = ctx.redactor.redact_text(ctx.loaded.text)
    with warnings.catch_warnings():
        # MLflow registers its local-file source for two URI schemes, so every local path
        # "can be interpreted in multiple ways" -- both ways are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        datasets = {
            context: from_pandas(
                splits[name],
                source=str(ctx.dataset_path),
                targets=spec.data.target,
                name=f"{spec.name}-{name}",
                digest=ctx.split_digests[name][:32],
            )
            for context, name in (("training", "train"), ("validation", "validation"))
        }
    total = sum(len(p.combos) for p in plans)
    outcomes = []
    parent = mlflow.start_run(
        experiment_id=experiment_id, run_name=f"{spec.name}-train", tags={**tags, "mlops.role": "training"}
    )
    active = [parent]
    try:
        mlflow.log_params(
            {
                "seed": spec.seed,
                "candidates": len(plans),
                "search.strategy": spec.training.search.strategy,
                "cv.folds": spec.training.search.cv_folds,
                "features": len(ctx.features),
            }
        )
        mlflow.log_text(spec_text, "spec.yaml")
        mlflow.log_dict(env, "environment.json")
        for name, report in ctx.reports.items():
            mlflow.log_dict(report, f"data/{name}.json")
        with ctx.progress(f"training {len(plans)} candidates of {spec.name}", total) as advance:
            for plan in plans:
                child = mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=plan.candidate.name,
                    nested=True,
                    tags={**tags, "mlops.role": "candidate", "mlops.candidate": plan.candidate.name},
                )
                active.append(child)
                fit = _candidate_fit(plan, data, spec, ctx.n_jobs, advance)
                params = {**plan.candidate.params, **fit["best"]["params"]}
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
                    {
                        **{k: v for k, v in fit["best"].items() if k.startswith("cv_")},
                        **fit["validation"],
                        "fit_seconds": fit["seconds"],
                    }
                )
                for context, dataset in datasets.items():
                    mlflow.log_input(dataset, context=context)
                mlflow.log_text(spec_text, "spec.yaml")
                mlflow.log_dict(env, "environment.json")
                mlflow.log_dict({"metric": metric, "combinations": fit["results"]}, "search_results.json")
                example = _redacted_example(data.x_train, ctx.redactor)
                with warnings.catch_warnings():
                    # class indices are integers and never missing; the hint is about inputs
                    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
                    signature = infer_signature(data.x_train.head(200), fit["model"].predict(data.x_train.head(200)))
                logged = mlflow.sklearn.log_model(
                    fit["model"],
                    name="model",
                    signature=signature,
                    input_example=example,
                    pip_requirements=model_requirements(env),
                    serialization_format="skops",
                    skops_trusted_types=trusted_types(fit["model"]),
                )
                mlflow.end_run()
                active.pop()
                outcomes.append(
                    {
                        "candidate": plan.candidate.name,
                        "estimator": plan.candidate.estimator,
                        "run_id": child.info.run_id,
                        "model_uri": logged.model_uri,
                        "params": params,
                        "cv": {
                            k.removeprefix("cv_"): v
                            for k, v in fit["best"].items()
                            if k.startswith("cv_") and not k.endswith("_std")
                        },
                        "validation": {k.removeprefix("val_"): v for k, v in fit["validation"].items()},
                        "greater_is_better": fit["greater_is_better"],
                    }
                )
        sign = 1.0 if outcomes[0]["greater_is_better"] else -1.0
        best = max(outcomes, key=lambda o: (sign * o["validation"][metric], o["candidate"]))
        client = mlflow.tracking.MlflowClient()
        for outcome in outcomes:
            client.set_tag(outcome["run_id"], "mlops.best", "true" if outcome is best else "false")
        mlflow.set_tags({"mlops.best.run_id": best["run_id"], "mlops.best.candidate": best["candidate"]})
        mlflow.log_metric(f"best_val_{metric}", best["validation"][metric])
        mlflow.end_run()
    except BaseException as exc:
        reason = ctx.redactor.redact_text(f"{type(exc).__name__}: {exc}")[:4000]
        while active:
            run = active.pop()
            mlflow.tracking.MlflowClient().set_tag(run.info.run_id, "mlops.failure_reason", reason)
            mlflow.end_run(status="FAILED")
        raise
    return {
        "experiment_id": experiment_id,
        "parent_run_id": parent.info.run_id,
        "data_digest": ctx.data_digest,
        "metric": metric,
        "candidates": [{k: v for k, v in o.items() if k != "greater_is_better"} for o in outcomes],
        "best": {"candidate": best["candidate"], "run_id": best["run_id"], metric: best["validation"][metric]},
    }
