"""The tool core: atomic writes, the one backend constructor, the store URI and the alias lookup."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_supervisor.policies import AuditLog, PatternRedactor, load_policy
from mlops_supervisor.tools.core import (
    ModelArgs,
    ModelVersionArgs,
    ToolContext,
    default_tracking_uri,
    publish_dir,
    to_json,
    using_store,
    write_atomic,
    write_json_atomic,
)
from mlops_supervisor.tools.registry import aliased_version
from mlops_supervisor.tools.serving import LocalBackend


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    """The new content replaces the old whole; nothing else is left in the directory."""
    path = tmp_path / "state" / "state.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_text("utf-8") == "new"
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A write that fails part-way leaves the previous content and no temporary file."""
    path = tmp_path / "routes.json"
    write_atomic(path, "before")
    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]  # a value that cannot be written
    assert path.read_text("utf-8") == "before"
    assert [p.name for p in tmp_path.iterdir()] == ["routes.json"]


def test_write_atomic_flushes_the_file_and_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file's data and then the directory entry are fsynced, so the rename survives a crash."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    write_atomic(tmp_path / "canary.json", "{}")
    assert synced == ["file", "dir"]


def test_write_json_atomic_writes_indented_json_with_dates_as_text(tmp_path: Path) -> None:
    """JSON values it lacks (a datetime) are written as text."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    write_json_atomic(tmp_path / "p.json", {"at": at, "n": 1})
    text = (tmp_path / "p.json").read_text("utf-8")
    assert json.loads(text) == {"at": "2026-01-02 03:04:05+00:00", "n": 1}
    assert "\n  " in text


def test_publish_dir_keeps_an_existing_equal_directory(tmp_path: Path) -> None:
    """A content-addressed directory already in place stays; the staged copy is removed."""
    final = tmp_path / "datasets" / "abc"
    first = tmp_path / ".staging-1"
    first.mkdir()
    (first / "data.txt").write_text("one", "utf-8")
    publish_dir(first, final)
    second = tmp_path / ".staging-2"
    second.mkdir()
    (second / "data.txt").write_text("two", "utf-8")
    publish_dir(second, final)
    assert (final / "data.txt").read_text("utf-8") == "one"
    assert not first.exists() and not second.exists()


def test_for_workspace_defaults_to_the_workspace_store(tmp_path: Path) -> None:
    """Without a tracking URI the backend's servers read the workspace's own SQLite store."""
    backend = LocalBackend.for_workspace(tmp_path / "ws")
    assert backend.tracking_uri == f"sqlite:///{(tmp_path / 'ws').absolute() / 'mlflow.db'}"
    assert backend.root == tmp_path / "ws" / "serving"
    assert LocalBackend.for_workspace(tmp_path / "ws", "http://mlflow:5000").tracking_uri == "http://mlflow:5000"


def test_context_store_uri_is_the_given_one_or_the_workspace_default(tmp_path: Path) -> None:
    """ToolContext.store_uri is the one place the default tracking URI is decided."""
    policy = load_policy(None)
    ctx = ToolContext(
        workspace=tmp_path, audit=AuditLog(tmp_path / "audit.jsonl"), policy=policy, redactor=PatternRedactor()
    )
    assert ctx.store_uri == default_tracking_uri(tmp_path)
    other = ToolContext(
        workspace=tmp_path,
        audit=ctx.audit,
        policy=policy,
        redactor=ctx.redactor,
        tracking_uri="sqlite:////elsewhere/mlflow.db",
    )
    assert other.store_uri == "sqlite:////elsewhere/mlflow.db"


def test_shared_argument_schemas_check_the_version() -> None:
    """The shared schemas name the model and refuse a version below 1."""
    assert ModelVersionArgs(model="m", version=2).model_dump() == {"model": "m", "version": 2}
    assert list(ModelArgs.model_json_schema()["properties"]) == ["model"]
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        ModelVersionArgs(model="m", version=0)
    assert to_json({"p": Path("/a")}) == '{"p": "/a"}'


def test_aliased_version_is_none_until_the_alias_is_set(tmp_path: Path) -> None:
    """The one alias lookup: None for an unset alias, the version once it is set."""
    with using_store(default_tracking_uri(tmp_path)) as client:
        client.create_registered_model("m")
        client.create_model_version("m", source=(tmp_path / "model").as_uri())
        client.create_model_version("m", source=(tmp_path / "model").as_uri())
        assert aliased_version(client, "m") is None
        client.set_registered_model_alias("m", "champion", "2")
        found = aliased_version(client, "m")
        assert found is not None and int(found.version) == 2
        assert aliased_version(client, "m", "challenger") is None


class _Registry:
    """A registry client whose every read fails with ``error`` (a store that cannot answer, or one that says no)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_model_version_by_alias(self, model: str, alias: str) -> Any:
        raise self.error

    def get_model_version(self, model: str, version: str) -> Any:
        raise self.error

    def get_run(self, run_id: str) -> Any:
        raise self.error


def test_a_store_that_cannot_answer_stops_the_lookups() -> None:
    """Only the store's own 'not found' means none; a failure to answer raises RunError, never 'no champion'."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE

    from mlops_supervisor.policies import InvalidInputError, RunError
    from mlops_supervisor.tools.registry import model_version, training_evidence

    down = _Registry(ConnectionError("connection refused"))
    for read in (
        lambda c: aliased_version(c, "m"),
        lambda c: model_version(c, "m", 1),
        lambda c: training_evidence(c, "r1"),
    ):
        with pytest.raises(RunError, match=r"could not read .* from the MLflow store .*connection refused"):
            read(down)
    busy = _Registry(MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE))
    with pytest.raises(RunError, match="database is locked"):
        aliased_version(busy, "m")
    gone = _Registry(MlflowException("not found", error_code=RESOURCE_DOES_NOT_EXIST))
    assert aliased_version(gone, "m") is None
    with pytest.raises(InvalidInputError, match="there is no registered model 'm' version 1"):
        model_version(gone, "m", 1)


def test_a_registry_error_during_the_champion_comparison_stops_the_evaluation() -> None:
    """The champion comparison does not treat an unreadable registry as 'no champion yet'."""
    from mlops_supervisor.policies import RunError
    from mlops_supervisor.tools._spec import PipelineSpec
    from mlops_supervisor.tools.evaluation._champion import champion_comparison

    spec = PipelineSpec.model_validate(
        {
            "name": "p",
            "data": {"source": "sklearn:iris", "target": "target"},
            "training": {"candidates": [{"name": "lr", "estimator": "sklearn.linear_model.LogisticRegression"}]},
            "model": {"name": "m"},
        }
    )
    with pytest.raises(RunError, match="alias 'champion'"):
        champion_comparison(_Registry(OSError("disk I/O error")), "m", 2, spec, pd.DataFrame(), None, {"roc_auc": 0.9})  # type: ignore[arg-type]


def test_model_names_in_tool_arguments_follow_the_spec_rule() -> None:
    """A model argument with a path separator or '..' is refused with the rule, as a spec's model name is."""
    from mlops_supervisor.tools._spec import ModelSpec

    for bad in ("../etc", "a/b", "..", ".hidden", ""):
        with pytest.raises(ValueError, match=r"model name .* must be 1-64 letters, digits"):
            ModelVersionArgs(model=bad, version=1)
        with pytest.raises(ValueError, match=r"model name .* must be 1-64 letters, digits"):
            ModelSpec(name=bad)
    assert ModelArgs(model="adult-income.v2_x").model == "adult-income.v2_x"


def _logged(tmp_path: Path, model: Any, **options: Any) -> str:
    """Log ``model`` in a store under ``tmp_path``; its model URI."""
    import mlflow
    import mlflow.sklearn

    from mlops_supervisor.tools.core import ensure_experiment

    uri = default_tracking_uri(tmp_path)
    with using_store(uri) as client:
        experiment = ensure_experiment(client, "models", workspace=tmp_path, tracking_uri=uri)
        with mlflow.start_run(experiment_id=experiment):
            return str(mlflow.sklearn.log_model(model, name="model", **options).model_uri)


def _fitted(step: Any = None) -> Any:
    """A fitted pipeline; ``step``, when given, replaces its first step afterwards (it need not run)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.9, 0.1]])
    pipeline = make_pipeline(FunctionTransformer(), LogisticRegression()).fit(x, [0, 1, 0, 1])
    if step is not None:
        pipeline.steps[0] = ("functiontransformer", step)
    return pipeline


def test_a_model_that_declares_a_foreign_type_trusted_is_not_loaded(tmp_path: Path) -> None:
    """A skops model whose own MLmodel trusts os.getcwd loads in MLflow's loader, and is refused by ours."""
    import os

    import mlflow.sklearn
    from sklearn.preprocessing import FunctionTransformer

    from mlops_supervisor.policies import InvalidInputError
    from mlops_supervisor.tools.core import load_sklearn_model

    crafted = _fitted(FunctionTransformer(os.getcwd))
    uri = _logged(tmp_path, crafted, serialization_format="skops", skops_trusted_types=["posix.getcwd"])
    with using_store(default_tracking_uri(tmp_path)):
        assert mlflow.sklearn.load_model(uri) is not None  # what a model's own list buys it with MLflow's loader
        with pytest.raises(InvalidInputError, match=r"holds types outside numpy, scipy, sklearn: posix\.getcwd"):
            load_sklearn_model(uri)


def test_pickled_models_are_refused_and_plain_skops_models_load(tmp_path: Path) -> None:
    """pickle and cloudpickle run code on load: refused; a skops model of sklearn types loads and predicts."""
    from mlops_supervisor.policies import InvalidInputError
    from mlops_supervisor.tools.core import load_sklearn_model

    model = _fitted()
    pickled = _logged(tmp_path, model, serialization_format="cloudpickle")
    safe = _logged(tmp_path, model, serialization_format="skops", skops_trusted_types=[])
    with using_store(default_tracking_uri(tmp_path)):
        with pytest.raises(InvalidInputError, match="serialized as cloudpickle, which runs code when loaded"):
            load_sklearn_model(pickled)
        loaded = load_sklearn_model(safe)
    x = np.array([[0.1, 0.8], [0.8, 0.3]])
    assert loaded.predict(x).tolist() == model.predict(x).tolist()
