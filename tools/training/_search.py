"""The search behind training: a plan checked against the policy, and each candidate's cross-validated fit.

``plan_search`` checks a spec against the policy before anything runs (estimator on the
allow-list, parameters the estimator knows and accepts, search within its bounds), so a
bad spec starts no MLflow run at all. ``fit_candidate`` fits one candidate in a
preprocessing pipeline, cross-validates its seeded search and refits the best parameters.
Nothing here talks to MLflow.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.policy import TrainingRules
from mlops_supervisor.tools._spec import Candidate, PipelineSpec, search_size

__all__ = [
    "CandidateFit",
    "SearchPlan",
    "TrainingData",
    "build_estimator",
    "fit_candidate",
    "import_estimator",
    "plan_search",
    "prepare_training_data",
]

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


@dataclass(frozen=True)
class SearchPlan:
    """One candidate, its estimator class and the parameter combinations its search tries."""

    candidate: Candidate
    estimator: type
    combos: tuple[dict[str, Any], ...]
    has_proba: bool


def import_estimator(path: str) -> type:
    """The class at import path ``path`` (``module.Name``)."""
    module, _, name = path.rpartition(".")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def build_estimator(plan: SearchPlan, params: dict[str, Any], seed: int) -> Any:
    """The candidate's estimator with its fixed ``params`` and one combination; seeded unless a seed is given."""
    estimator = plan.estimator(**plan.candidate.params, **params)
    if "random_state" in estimator.get_params() and "random_state" not in {**plan.candidate.params, **params}:
        estimator.set_params(random_state=seed)
    return estimator


# --- planning -----------------------------------------------------------------------------


def plan_search(spec: PipelineSpec, rules: TrainingRules) -> list[SearchPlan]:
    """The search of every candidate, checked against ``rules``; ``InvalidInputError`` before any run."""
    plans = [_plan_candidate(candidate, spec, rules) for candidate in spec.training.candidates]
    _check_fits(plans, spec.training.search.cv_folds, rules)
    return plans


def _plan_candidate(candidate: Candidate, spec: PipelineSpec, rules: TrainingRules) -> SearchPlan:
    """One candidate's search, checked cheapest first: allow-list, size, parameter names, values, metric."""
    _check_allowed(candidate, rules)
    size = search_size(candidate, spec.training.search)
    _check_size(candidate, size, rules)
    cls = import_estimator(candidate.estimator)
    _check_known_params(candidate, cls)
    plan = SearchPlan(candidate, cls, _combinations(candidate, spec, size), has_proba=False)
    _check_combinations(plan, spec.seed)
    has_proba = hasattr(build_estimator(plan, plan.combos[0], spec.seed), "predict_proba")
    if spec.training.metric == "log_loss" and not has_proba:
        raise InvalidInputError(
            "metric_unsupported",
            f"candidate {candidate.name!r}: {candidate.estimator} gives no probabilities, so log_loss "
            "cannot rank it; choose another metric or estimator",
        )
    return dataclasses.replace(plan, has_proba=has_proba)


def _check_allowed(candidate: Candidate, rules: TrainingRules) -> None:
    """``estimator_not_allowed`` unless the policy's allow-list holds the candidate's estimator."""
    if candidate.estimator not in rules.estimators:
        raise InvalidInputError(
            "estimator_not_allowed",
            f"candidate {candidate.name!r}: estimator {candidate.estimator} is not allowed by the policy "
            f"(training.estimators); allowed: {', '.join(rules.estimators)}",
        )


def _check_size(candidate: Candidate, size: int, rules: TrainingRules) -> None:
    """``search_space_too_large`` when the candidate tries more combinations than the policy allows."""
    if size > rules.max_search_candidates:
        raise InvalidInputError(
            "search_space_too_large",
            f"candidate {candidate.name!r}: the search tries {size} parameter combinations, over the policy's "
            f"training.max_search_candidates of {rules.max_search_candidates}; shrink search_space or use "
            "strategy: random with a smaller n_iter",
        )


def _check_known_params(candidate: Candidate, cls: type) -> None:
    """``unknown_parameter`` when a fixed or searched parameter is not one the estimator has."""
    known = set(cls().get_params())
    unknown = sorted((set(candidate.params) | set(candidate.search_space)) - known)
    if unknown:
        raise InvalidInputError(
            "unknown_parameter",
            f"candidate {candidate.name!r}: {candidate.estimator.rsplit('.', 1)[1]} has no parameter "
            f"{', '.join(unknown)}; it has: {', '.join(sorted(known))}",
        )


def _combinations(candidate: Candidate, spec: PipelineSpec, size: int) -> tuple[dict[str, Any], ...]:
    """The parameter combinations the search tries: the whole grid, or ``size`` seeded samples."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    space = {k: list(v) for k, v in candidate.search_space.items()}
    if not space:
        combos: list[dict[str, Any]] = [{}]
    elif spec.training.search.strategy == "grid":
        combos = list(ParameterGrid(space))
    else:
        combos = list(ParameterSampler(space, n_iter=size, random_state=spec.seed))
    return tuple(combos)


def _check_combinations(plan: SearchPlan, seed: int) -> None:
    """``invalid_parameter`` when the estimator rejects a value in any combination."""
    from sklearn.utils._param_validation import InvalidParameterError

    for combo in plan.combos:
        estimator = build_estimator(plan, combo, seed)
        try:
            estimator._validate_params()
        except InvalidParameterError as exc:
            raise InvalidInputError(
                "invalid_parameter", f"candidate {plan.candidate.name!r} with {combo or 'its params'}: {exc}"
            ) from None


def _check_fits(plans: list[SearchPlan], folds: int, rules: TrainingRules) -> None:
    """``search_space_too_large`` when the whole search needs more model fits than the policy allows."""
    fits = sum((len(p.combos) * folds) + 1 for p in plans)
    if fits > rules.max_fits:
        raise InvalidInputError(
            "search_space_too_large",
            f"the search needs {fits} model fits (combinations x {folds} folds + refits), over "
            f"the policy's training.max_fits of {rules.max_fits}",
        )


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
    train, validation = splits["train"], splits["validation"]
    x_train, x_validation = _model_inputs(train, features), _model_inputs(validation, features)
    if spec.training.task == "regression":
        return TrainingData(
            x_train, train[target].to_numpy(float), x_validation, validation[target].to_numpy(float), None
        )
    classes = sorted(train[target].dropna().unique().tolist(), key=str)
    if len(classes) == 2:
        positive = spec.data.positive_class if spec.data.positive_class is not None else classes[1]
        classes = [c for c in classes if c != positive] + [positive]
    index = {c: i for i, c in enumerate(classes)}
    return TrainingData(
        x_train,
        train[target].map(index).to_numpy(int),
        x_validation,
        validation[target].map(index).to_numpy(int),
        classes,
    )


def _model_inputs(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The feature columns of ``frame``, numbers and booleans as float64."""
    # Numbers go in as float64: a served request may miss a value, and an integer
    # column in the model's signature could not say so.
    out = frame[features].copy()
    for column in out.columns:
        if pd.api.types.is_bool_dtype(out[column]) or pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].astype("float64")
    return out


# --- fitting ------------------------------------------------------------------------------


def _pipeline(plan: SearchPlan, features: pd.DataFrame, params: dict[str, Any], seed: int) -> Any:
    """Impute, scale and encode ``features`` the way the candidate's estimator needs, then the estimator."""
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
    return Pipeline([("preprocess", pre), ("model", build_estimator(plan, params, seed))])


def _scorers(plan: SearchPlan, spec: PipelineSpec, binary: bool) -> dict[str, str]:
    """Metric name -> scikit-learn scorer for the task; log_loss only for estimators with probabilities."""
    if spec.training.task == "regression":
        return dict(_REGRESSION_SCORERS)
    scorers = {m: pair[0 if binary else 1] for m, pair in _CLASSIFICATION_SCORERS.items()}
    if not plan.has_proba:
        scorers.pop("log_loss")
    return scorers


def _positive(value: float, scorer: str) -> float:
    """Scores as people read them: losses and errors as positive numbers."""
    return -value if scorer.startswith("neg_") else value


@dataclass(frozen=True)
class CandidateFit:
    """One candidate's search: every combination's CV scores, the best refitted and its validation scores.

    ``best`` and each of ``results`` hold ``params`` and ``cv_<metric>`` / ``cv_<metric>_std``
    scores; ``validation`` holds ``val_<metric>`` scores; ``seconds`` covers search and refit.
    """

    model: Any
    results: list[dict[str, Any]]
    best: dict[str, Any]
    validation: dict[str, float]
    seconds: float
    greater_is_better: bool


def fit_candidate(
    plan: SearchPlan, data: TrainingData, spec: PipelineSpec, n_jobs: int | None, advance: Callable[[str], None]
) -> CandidateFit:
    """Cross-validate every combination of ``plan``, refit the best on the training split, score it on validation."""
    splitter = _splitter(spec)
    scorers = _scorers(plan, spec, data.binary)
    metric = spec.training.metric
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for combo in plan.combos:
        results.append(_cross_validate(plan, combo, data, spec, splitter, scorers, n_jobs))
        advance(f"{plan.candidate.name} {combo or ''}".strip())
    sign = -1.0 if scorers[metric].startswith("neg_") else 1.0
    best = max(results, key=lambda r: sign * r[f"cv_{metric}"])
    model = _pipeline(plan, data.x_train, best["params"], spec.seed).fit(data.x_train, data.y_train)
    return CandidateFit(
        model=model,
        results=results,
        best=best,
        validation=_validation_scores(model, data, scorers),
        seconds=round(time.perf_counter() - started, 3),
        greater_is_better=sign > 0,
    )


def _splitter(spec: PipelineSpec) -> Any:
    """Seeded, shuffled folds: stratified for classification."""
    from sklearn.model_selection import KFold, StratifiedKFold

    folds = spec.training.search.cv_folds
    if spec.training.task == "classification":
        return StratifiedKFold(folds, shuffle=True, random_state=spec.seed)
    return KFold(folds, shuffle=True, random_state=spec.seed)


def _cross_validate(
    plan: SearchPlan,
    combo: dict[str, Any],
    data: TrainingData,
    spec: PipelineSpec,
    splitter: Any,
    scorers: dict[str, str],
    n_jobs: int | None,
) -> dict[str, Any]:
    """One combination's mean and spread of every score across the folds; ``training_failed`` if it cannot fit."""
    from sklearn.model_selection import cross_validate

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
    return {
        "params": combo,
        **{f"cv_{m}": round(_positive(float(np.mean(scores[f"test_{m}"])), s), 6) for m, s in scorers.items()},
        **{f"cv_{m}_std": round(float(np.std(scores[f"test_{m}"])), 6) for m in scorers},
    }


def _validation_scores(model: Any, data: TrainingData, scorers: dict[str, str]) -> dict[str, float]:
    """Every score of the refitted ``model`` on the validation split, as ``val_<metric>``."""
    from sklearn.metrics import get_scorer

    return {
        f"val_{m}": round(_positive(float(get_scorer(s)(model, data.x_validation, data.y_validation)), s), 6)
        for m, s in scorers.items()
    }
