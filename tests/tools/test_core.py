"""The tool core: atomic writes, the one backend constructor, the store URI and the alias lookup."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

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
