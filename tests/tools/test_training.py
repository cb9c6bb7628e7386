"""Training's parts on their own: lineage tags, choosing the best, failed runs, data encoding, the search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_supervisor.policies import AuditLog, InvalidInputError, PatternRedactor, load_policy
from mlops_supervisor.policies.redaction import Finding
from mlops_supervisor.tools import load_spec
from mlops_supervisor.tools.core import ToolContext, no_progress, using_store
from mlops_supervisor.tools.training import experimentation_tools, plan_search
from mlops_supervisor.tools.training._runs import (
    CandidateOutcome,
    TrainingContext,
    _end_failed,
    choose_best,
    lineage_tags,
)
from mlops_supervisor.tools.training._search import TrainingData, fit_candidate, prepare_training_data
from tests.conftest import EXAMPLE_SPEC, with_overrides


class _Marking:
    """A redactor that marks every text it saw and hides the word 'canary'."""

    def redact_text(self, text: str) -> str:
        return "[" + text.replace("canary", "<SECRET>") + "]"

    def findings(self, text: str) -> list[Finding]:
        return []


def _spec_file(tmp_path: Path, **changes: Any) -> Path:
    spec = with_overrides(yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8")), **changes)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), "utf-8")
    return path


def _context(**changes: Any) -> TrainingContext:
    fields: dict[str, Any] = {
        "loaded": load_spec(EXAMPLE_SPEC),
        "data_digest": "d" * 64,
        "split_key": "k" * 16,
        "split_digests": {"train": "t" * 64, "validation": "v" * 64, "test": "s" * 64},
        "dataset_path": Path("/ws/datasets/ddd/data.parquet"),
        "features": ["age", "education"],
        "reports": {},
        "redactor": _Marking(),
        "n_jobs": None,
        "progress": no_progress,
    }
    return TrainingContext(**{**fields, **changes})


_ENV = {"python": "3.11.9", "platform": "Linux", "packages": {"mlops-supervisor": "0.1.0", "scikit-learn": "1.6.1"}}


def test_lineage_tags_name_spec_data_splits_code_environment_and_classes() -> None:
    """Every run carries the spec, data, split, code and environment; the data source passes through the redactor."""
    ctx = _context()
    tags = lineage_tags(ctx, ["<=50K", ">50K"], _ENV, {"git_commit": "abc123", "git_dirty": "true"})
    assert tags == {
        "mlops.pipeline": "adult-income",
        "mlops.spec.digest": ctx.loaded.digest,
        "mlops.data.digest": "d" * 64,
        "mlops.data.source": f"[{ctx.loaded.resolve_source()}]",
        "mlops.split.train.digest": "t" * 64,
        "mlops.split.validation.digest": "v" * 64,
        "mlops.split.test.digest": "s" * 64,
        "mlops.split.key": "k" * 16,
        "mlops.dataset.path": "/ws/datasets/ddd/data.parquet",
        "mlops.code.git_commit": "abc123",
        "mlops.code.git_dirty": "true",
        "mlops.code.version": "0.1.0",
        "mlops.env.python": "3.11.9",
        "mlops.env.sklearn": "1.6.1",
        "mlops.seed": "42",
        "mlops.task": "classification",
        "mlops.target": "class",
        "mlops.metric": "roc_auc",
        "mlops.target.classes": '["<=50K", ">50K"]',
    }


def test_lineage_tags_leave_out_classes_when_the_target_has_none() -> None:
    """A regression target (no classes) gets no mlops.target.classes tag."""
    tags = lineage_tags(_context(), None, _ENV, {"git_commit": "none", "git_dirty": "unknown"})
    assert "mlops.target.classes" not in tags
    assert tags["mlops.code.git_commit"] == "none"


def _outcome(name: str, score: float, *, greater_is_better: bool = True, metric: str = "roc_auc") -> CandidateOutcome:
    return CandidateOutcome(
        candidate=name,
        estimator="sklearn.linear_model.LogisticRegression",
        run_id=f"run-{name}",
        model_uri=f"models:/m-{name}",
        params={},
        cv={metric: score},
        validation={metric: score},
        greater_is_better=greater_is_better,
    )


def test_best_candidate_has_the_highest_validation_score() -> None:
    """For a score where higher is better, the highest validation value wins, wherever it sits in the list."""
    outcomes = [_outcome("a", 0.81), _outcome("b", 0.86), _outcome("c", 0.79)]
    assert choose_best(outcomes, "roc_auc").candidate == "b"


def test_best_candidate_on_a_loss_has_the_lowest_value() -> None:
    """For a loss (greater_is_better false), the lowest validation value wins."""
    outcomes = [
        _outcome(name, loss, greater_is_better=False, metric="log_loss")
        for name, loss in (("a", 0.42), ("b", 0.35), ("c", 0.51))
    ]
    assert choose_best(outcomes, "log_loss").candidate == "b"


def test_a_tie_goes_to_the_candidate_whose_name_sorts_last() -> None:
    """Equal scores are broken by name, the same way whatever order the candidates ran in."""
    tied = [_outcome("gbm", 0.9), _outcome("lr", 0.9), _outcome("forest", 0.9)]
    assert choose_best(tied, "roc_auc").candidate == "lr"
    assert choose_best(list(reversed(tied)), "roc_auc").candidate == "lr"
    losses = [_outcome("gbm", 0.3, greater_is_better=False), _outcome("lr", 0.3, greater_is_better=False)]
    assert choose_best(losses, "roc_auc").candidate == "lr"


def test_a_failure_ends_every_open_run_failed_with_the_redacted_reason(tmp_path: Path) -> None:
    """The child and the parent both end FAILED, tagged with the redacted reason cut at 4000 characters."""
    import mlflow

    with using_store(f"sqlite:///{tmp_path / 'mlflow.db'}") as client:
        experiment = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
        parent = mlflow.start_run(experiment_id=experiment)
        child = mlflow.start_run(experiment_id=experiment, nested=True)
        active = [parent, child]
        _end_failed(active, ValueError("the canary " + "x" * 5000), _Marking())
        assert active == []
        assert mlflow.active_run() is None
        for run in (parent, child):
            stored = client.get_run(run.info.run_id)
            assert stored.info.status == "FAILED"
            reason = stored.data.tags["mlops.failure_reason"]
            assert reason.startswith("[ValueError: the <SECRET> xxx")
            assert len(reason) == 4000
            assert "canary" not in reason


def test_binary_target_puts_the_positive_class_last_and_features_as_float(tmp_path: Path) -> None:
    """The positive class becomes 1 even when it sorts first; numbers and booleans go in as float64."""
    spec = load_spec(_spec_file(tmp_path, data__positive_class="<=50K")).spec
    frame = pd.DataFrame(
        {
            "age": [30, 41, 52, 29],
            "member": [True, False, True, False],
            "education": ["HS", "BSc", "MSc", "HS"],
            "class": ["<=50K", ">50K", "<=50K", ">50K"],
        }
    )
    data = prepare_training_data({"train": frame, "validation": frame.iloc[:2]}, spec, ["age", "member", "education"])
    assert data.classes == [">50K", "<=50K"]
    assert data.binary
    assert data.y_train.tolist() == [1, 0, 1, 0]
    assert data.y_validation.tolist() == [1, 0]
    assert list(data.x_train.columns) == ["age", "member", "education"]
    assert str(data.x_train["age"].dtype) == str(data.x_train["member"].dtype) == "float64"
    assert not pd.api.types.is_numeric_dtype(data.x_train["education"])


def test_search_on_a_loss_keeps_the_combination_with_the_lowest_cv_loss(tmp_path: Path) -> None:
    """With log_loss, the refit uses the lowest cross-validated loss, reported as a positive number."""
    lr = "sklearn.linear_model.LogisticRegression"
    path = _spec_file(
        tmp_path,
        training__metric="log_loss",
        training__search={"strategy": "grid", "cv_folds": 3},
        training__candidates=[{"name": "lr", "estimator": lr, "search_space": {"C": [0.0001, 10.0]}}],
    )
    spec = load_spec(path).spec
    (plan,) = plan_search(spec, load_policy(None).training)
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    y = (x["a"] + 0.3 * rng.normal(size=120) > 0).to_numpy(int)
    data = TrainingData(x.iloc[:90], y[:90], x.iloc[90:], y[90:], [0, 1])
    notes: list[str] = []
    fit = fit_candidate(plan, data, spec, None, notes.append)
    losses = {r["params"]["C"]: r["cv_log_loss"] for r in fit.results}
    assert losses[10.0] < losses[0.0001]
    assert fit.best["params"] == {"C": 10.0}
    assert not fit.greater_is_better
    assert all(v > 0 for v in losses.values())
    assert fit.validation["val_log_loss"] > 0
    assert len(notes) == 2


def test_experimentation_tools_are_bound_to_their_context(tmp_path: Path) -> None:
    """Both tools keep their schema and mutates flag, and list_runs reads the context's own store."""
    ctx = ToolContext(
        workspace=tmp_path / "ws",
        audit=AuditLog(tmp_path / "audit.jsonl"),
        policy=load_policy(None),
        redactor=PatternRedactor(),
    )
    tools = {t.name: t for t in experimentation_tools(ctx)}
    assert {n: (t.mutates, sorted(t.tool.args)) for n, t in tools.items()} == {
        "train_model": (True, ["spec"]),
        "list_runs": (False, ["experiment", "limit"]),
    }
    (tmp_path / "ws").mkdir()
    with pytest.raises(InvalidInputError, match=r"no MLflow experiment 'nope'; experiments: Default") as caught:
        tools["list_runs"].tool.invoke({"experiment": "nope"})
    assert caught.value.reason_code == "unknown_experiment"
    assert (tmp_path / "ws" / "mlflow.db").exists()


def test_code_version_does_not_run_the_checkouts_own_programs(tmp_path: Path) -> None:
    """A spec directory whose git config names an fsmonitor program: the commit is read, the program never runs."""
    import subprocess

    from mlops_supervisor.tools.training import code_version

    repo = tmp_path / "repo"
    repo.mkdir()
    marker = tmp_path / "ran"
    hook = tmp_path / "monitor.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n", "utf-8")
    hook.chmod(0o755)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "spec.yaml").write_text("name: x\n", "utf-8")
    subprocess.run([*git, "add", "spec.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "spec"], check=True)
    subprocess.run([*git, "config", "core.fsmonitor", str(hook)], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert code_version(repo) == {"git_commit": head, "git_dirty": "false"}
    assert not marker.exists()
