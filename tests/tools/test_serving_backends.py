"""ServingBackends: each endpoint goes to the backend its deploy chose (local by default), and stays there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import AuditLog, InvalidInputError, PatternRedactor, RunError, load_policy
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.serving import ServingBackends

SPEC: dict[str, Any] = {
    "name": "small",
    "data": {"source": "data.csv", "target": "y"},
    "training": {
        "metric": "roc_auc",
        "candidates": [{"name": "lr", "estimator": "sklearn.linear_model.LogisticRegression"}],
    },
    "model": {"name": "m"},
}
KUBE = {"target": "kubernetes", "kubernetes": {"namespace": "ml", "image": "registry.example/mlops:1.0"}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Model ``m``: version 1 trained from a locally served spec, version 2 from one served on Kubernetes."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with using_store(uri) as client:
        client.create_registered_model("m")
        experiment = client.create_experiment("e", artifact_location=(root / "artifacts").as_uri())
        for serving in ({"target": "local"}, KUBE):
            run = client.create_run(experiment)
            spec = root / "spec.yaml"
            spec.write_text(yaml.safe_dump({**SPEC, "serving": serving}), "utf-8")
            client.log_artifact(run.info.run_id, str(spec))
            client.create_model_version(
                "m", source=str(root / "model"), tags={"mlops.training.run_id": run.info.run_id}
            )
    return uri


def _ctx(tmp_path: Path, store: str, **extra: Any) -> ToolContext:
    return ToolContext(
        workspace=tmp_path,
        audit=AuditLog(tmp_path / "audit.jsonl"),
        policy=load_policy(None),
        redactor=PatternRedactor(),
        tracking_uri=store,
        **extra,
    )


def test_an_endpoint_without_a_record_is_local(tmp_path: Path, store: str) -> None:
    """No backend.json: the local backend answers, and says so; nothing is listed."""
    backends = ServingBackends(_ctx(tmp_path, store))
    assert backends.target("m") == "local" and backends.backend_for("m") is backends.local
    assert backends.status("m")["backend"] == "local" and backends.models() == []


def test_a_kubernetes_version_without_prometheus_is_refused_before_anything_is_recorded(
    tmp_path: Path, store: str
) -> None:
    """Version 2's spec names kubernetes; with no Prometheus its canary could not be judged: refused, nothing written."""
    backends = ServingBackends(_ctx(tmp_path, store, kubeconfig=tmp_path / "kubeconfig"))
    with pytest.raises(InvalidInputError, match="MLOPS_PROMETHEUS_URL") as refused:
        backends.deploy("m", 2, "models:/m/2", weight=100)
    assert refused.value.reason_code == "prometheus_not_configured"
    assert not (tmp_path / "serving").exists()


def test_a_version_for_another_target_than_the_endpoints_is_refused(tmp_path: Path, store: str) -> None:
    """An endpoint served locally (state recorded) cannot take a version whose spec names kubernetes."""
    home = tmp_path / "serving" / "m"
    home.mkdir(parents=True)
    state = {
        "model": "m",
        "router": None,
        "versions": {"1": {"pid": 999999, "port": 1, "weight": 100, "model_uri": "x"}},
    }
    (home / "state.json").write_text(json.dumps(state), "utf-8")
    backends = ServingBackends(_ctx(tmp_path, store, prometheus_url="http://127.0.0.1:9"))
    with pytest.raises(InvalidInputError, match=r"served by the local backend.*serving\.target kubernetes") as refused:
        backends.deploy("m", 2, "models:/m/2", weight=10)
    assert refused.value.reason_code == "serving_target_changed"
    assert not (home / "backend.json").exists()


def test_a_tampered_record_is_an_error_not_a_quiet_fallback(tmp_path: Path, store: str) -> None:
    """backend.json naming an unknown target (or not JSON) raises RunError naming the file; never 'local' by default."""
    home = tmp_path / "serving" / "m"
    home.mkdir(parents=True)
    backends = ServingBackends(_ctx(tmp_path, store))
    (home / "backend.json").write_text(json.dumps({"target": "elsewhere"}), "utf-8")
    with pytest.raises(RunError, match=r"backend\.json names target 'elsewhere'"):
        backends.status("m")
    (home / "backend.json").write_text("{", "utf-8")
    with pytest.raises(RunError, match=r"backend\.json is not JSON"):
        backends.status("m")


def test_what_serves_comes_from_the_versions_spec_not_the_record(tmp_path: Path, store: str) -> None:
    """An edited backend.json cannot change what serves or where: the namespace and image are read again from the
    recorded version's spec in the registry, a record naming a version whose spec says otherwise is refused, and
    a record with no version is refused; each error names the file."""
    home = tmp_path / "serving" / "m"
    home.mkdir(parents=True)
    backends = ServingBackends(_ctx(tmp_path, store))
    forged = {
        "target": "kubernetes",
        "deployed_from_version": 2,
        "namespace": "kube-system",
        "context": "someone-elses-cluster",
        "serving": {"namespace": "kube-system", "image": "evil.example/miner:latest"},
    }
    (home / "backend.json").write_text(json.dumps(forged), "utf-8")
    serving = backends._recorded_serving("m", backends.record("m") or {})
    assert (serving.namespace, serving.image) == ("ml", "registry.example/mlops:1.0")
    (home / "backend.json").write_text(json.dumps({**forged, "deployed_from_version": 1}), "utf-8")
    with pytest.raises(RunError, match=r"backend\.json says m is served on kubernetes from version 1's spec"):
        backends.status("m")
    (home / "backend.json").write_text(json.dumps({"target": "kubernetes"}), "utf-8")
    with pytest.raises(RunError, match=r"backend\.json names no version"):
        backends.status("m")
