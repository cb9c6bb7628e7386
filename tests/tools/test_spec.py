"""The pipeline spec: the shipped example validates, and each kind of mistake is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import InvalidInputError, load_policy
from mlops_supervisor.tools import load_spec, spec_json_schema
from mlops_supervisor.tools.training import plan_search
from tests.conftest import ADULT, EXAMPLE_SPEC, with_overrides


def _write(tmp_path: Path, **changes: Any) -> Path:
    spec = with_overrides(yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8")), **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), "utf-8")
    return path


def test_example_spec_is_valid_and_resolves_its_data_next_to_itself() -> None:
    """examples/adult-income.yaml loads, and its relative source points at the shipped Parquet file."""
    loaded = load_spec(EXAMPLE_SPEC)
    assert loaded.spec.data.sensitive_features == ("sex", "race")
    assert Path(loaded.resolve_source()) == EXAMPLE_SPEC.parent / "data" / "adult.parquet"
    assert len(loaded.digest) == 64


def test_json_schema_describes_every_section() -> None:
    """The JSON Schema names the sections a spec holds and marks the required ones."""
    schema = spec_json_schema()
    assert set(schema["properties"]) >= {"name", "seed", "data", "training", "evaluation", "model", "deployment"}
    assert set(schema["required"]) == {"name", "data", "training", "model"}


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"data__source": "adult.xlsx"}, "unknown data format '.xlsx'"),
        ({"training__candidates": [{"name": "x", "estimator": "os.system"}]}, "'os.system' is not on the allow-list"),
        ({"training__metric": "rmse"}, "metric 'rmse' does not fit task classification"),
        ({"deployment__canary_steps": [50, 10]}, "canary_steps must rise"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_spec_is_named(tmp_path: Path, changes: dict[str, Any], needle: str) -> None:
    """Each mistake gives one message naming the field and what is allowed."""
    with pytest.raises(InvalidInputError, match="is invalid") as caught:
        load_spec(_write(tmp_path, **changes))
    assert needle in str(caught.value)
    assert caught.value.reason_code == "spec_invalid"


def test_search_bounds_come_from_the_policy(tmp_path: Path) -> None:
    """A search space over the policy's bound, or an estimator the policy leaves out, is refused before any run."""
    grid = {"C": [0.01 * i for i in range(1, 8)], "tol": [1e-4, 1e-3, 1e-2, 1e-1], "max_iter": [100, 200]}
    big = _write(
        tmp_path,
        training__candidates=[
            {"name": "lr", "estimator": "sklearn.linear_model.LogisticRegression", "search_space": grid}
        ],
    )
    with pytest.raises(InvalidInputError, match="56 parameter combinations, over") as caught:
        plan_search(load_spec(big).spec, load_policy(None).training)
    assert caught.value.reason_code == "search_space_too_large"

    narrow = tmp_path / "policy.yaml"
    narrow.write_text("training: {estimators: [sklearn.ensemble.HistGradientBoostingClassifier]}\n", "utf-8")
    with pytest.raises(InvalidInputError, match="LogisticRegression is not allowed by the policy") as caught:
        plan_search(load_spec(EXAMPLE_SPEC).spec, load_policy(narrow).training)
    assert caught.value.reason_code == "estimator_not_allowed"


def test_unknown_and_invalid_parameters_are_refused_before_training(tmp_path: Path) -> None:
    """A parameter the estimator lacks, or a value it rejects, is named before anything fits."""
    lr = "sklearn.linear_model.LogisticRegression"
    unknown = _write(tmp_path, training__candidates=[{"name": "lr", "estimator": lr, "params": {"depth": 3}}])
    with pytest.raises(InvalidInputError, match="has no parameter depth"):
        plan_search(load_spec(unknown).spec, load_policy(None).training)
    invalid = _write(tmp_path, training__candidates=[{"name": "lr", "estimator": lr, "search_space": {"C": [1, -1]}}])
    with pytest.raises(InvalidInputError, match="'C' parameter of LogisticRegression must be") as caught:
        plan_search(load_spec(invalid).spec, load_policy(None).training)
    assert caught.value.reason_code == "invalid_parameter"


def test_policy_cannot_widen_the_estimator_allow_list(tmp_path: Path) -> None:
    """training.estimators in a policy file may only name built-in allow-listed paths."""
    from mlops_supervisor.policies import PolicyFileError

    path = tmp_path / "policy.yaml"
    path.write_text("training: {estimators: [xgboost.XGBClassifier]}\n", "utf-8")
    with pytest.raises(PolicyFileError, match=r"not on it: xgboost\.XGBClassifier"):
        load_policy(path)


def test_champion_comparison_with_and_without_a_minimum_improvement() -> None:
    """Zero minimums: not worse is enough (MLflow rejects zero); positive minimums go through MLflow's validator."""
    from mlops_supervisor.tools._spec import ChampionComparison
    from mlops_supervisor.tools.evaluation import beats_champion

    none = ChampionComparison()
    assert beats_champion("roc_auc", 0.90, 0.90, none, greater_is_better=True) == (True, "")
    assert beats_champion("roc_auc", 0.89, 0.90, none, greater_is_better=True)[0] is False
    assert beats_champion("log_loss", 0.30, 0.31, none, greater_is_better=False)[0] is True
    strict = ChampionComparison(min_absolute_improvement=0.01)
    assert beats_champion("roc_auc", 0.905, 0.90, strict, greater_is_better=True)[0] is False
    assert beats_champion("roc_auc", 0.92, 0.90, strict, greater_is_better=True) == (True, "")


@pytest.mark.parametrize(
    ("deployment", "needle"),
    [
        (
            {"canary_steps": [100]},
            "deployment.canary_steps [100] has 0 step(s) below 100; the policy asks for at least 1",
        ),
        (
            {"canary_steps": [50, 100]},
            "deployment.canary_steps starts at 50 %; the policy allows a first step of at most 25",
        ),
        ({"analysis": {"min_requests": 1}}, "deployment.analysis.min_requests is 1; the policy asks for at least 100"),
        (
            {"analysis": {"window_seconds": 5}},
            "deployment.analysis.window_seconds is 5; the policy asks for at least 30",
        ),
        (
            {"analysis": {"max_error_rate_increase": 0.5}},
            "deployment.analysis.max_error_rate_increase is 0.5; the policy asks for at most 0.01",
        ),
        (
            {"analysis": {"max_p95_latency_ratio": 3}},
            "deployment.analysis.max_p95_latency_ratio is 3; the policy asks for at most 1.5",
        ),
    ],
)
def test_a_canary_plan_below_the_policy_is_refused_before_anything_runs(
    tmp_path: Path, deployment: dict[str, Any], needle: str
) -> None:
    """Each canary minimum the spec loosens is named with its value and the policy's bound; nothing starts."""
    from mlops_supervisor._pipeline import preflight

    path = _write(tmp_path, deployment=deployment, data__source=str(ADULT))
    load_spec(path)  # a valid spec: only the policy refuses it
    with pytest.raises(InvalidInputError) as caught:
        preflight(path, load_policy(None))
    assert caught.value.reason_code == "canary_below_policy"
    assert needle in str(caught.value)


def test_a_spec_may_tighten_the_canary_minimums_and_a_policy_may_ask_for_more(tmp_path: Path) -> None:
    """More steps, longer windows and stricter limits pass; a policy asking for three steps refuses the example's two."""
    from mlops_supervisor.tools.serving import check_deployment

    strict = {
        "canary_steps": [5, 20, 60, 100],
        "analysis": {
            "window_seconds": 120,
            "min_requests": 500,
            "max_error_rate_increase": 0,
            "max_p95_latency_ratio": 1.1,
        },
    }
    assert (
        check_deployment(load_spec(_write(tmp_path, deployment=strict)).spec.deployment, load_policy(None).canary) == []
    )
    assert check_deployment(load_spec(EXAMPLE_SPEC).spec.deployment, load_policy(None).canary) == []
    policy = tmp_path / "policy.yaml"
    policy.write_text("canary: {min_steps: 3}\n", "utf-8")
    (problem,) = check_deployment(load_spec(EXAMPLE_SPEC).spec.deployment, load_policy(policy).canary)
    assert problem == (
        "deployment.canary_steps [10, 50, 100] has 2 step(s) below 100; the policy asks for at least 3 (canary.min_steps)"
    )
