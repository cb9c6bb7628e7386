"""The policy file is validated on load, and bad files get one message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_supervisor.policies import PolicyFileError, load_policy


def test_default_policy_is_documented_and_safe() -> None:
    """The shipped default lists no approvers and holds promote_model."""
    policy = load_policy(None)
    assert policy.approvers == ()
    assert policy.requires_approval("promote_model")
    assert len(policy.digest) == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("approvers: [a\n  b: [", "not valid YAML"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("approverz: [bob]\n", "approverz: Extra inputs are not permitted"),
        ("limits: {max_steps: 0}\n", "limits.max_steps: Input should be greater than or equal to 1 (got 0)"),
        ("approval: {ttl_minutes: soon}\n", "approval.ttl_minutes"),
        (
            "evaluation: {regression_thresholds: {roc_auc: 0.8}}\n",
            "regression_thresholds knows rmse, mae and r2; not roc_auc",
        ),
    ],
)
def test_bad_policy_files_are_named(tmp_path: Path, text: str, expected: str) -> None:
    """Malformed or invalid policy files raise PolicyFileError naming the file and the field."""
    path = tmp_path / "policy.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(PolicyFileError) as info:
        load_policy(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_missing_policy_file(tmp_path: Path) -> None:
    """A missing file is named."""
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


def test_each_task_has_its_own_floors() -> None:
    """Classifiers meet the classification floors and regressors the regression ones (r2 by default)."""
    rules = load_policy(None).evaluation
    assert rules.floors("classification") == {"roc_auc": 0.75, "accuracy": 0.7}
    assert rules.floors("regression") == {"r2": 0.3}
