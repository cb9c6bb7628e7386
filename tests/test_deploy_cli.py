"""`mlops-supervisor deploy SPEC --dry-run -o yaml|json`: the objects a cluster would get, validated, nothing touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from mlops_supervisor._cli import app
from mlops_supervisor.policies import RunError, UsageError
from mlops_supervisor.tools._spec import KubernetesServing
from mlops_supervisor.tools.serving import preview
from mlops_supervisor.tools.serving._manifests import ANN_EVIDENCE, LABEL_MODEL, VersionServing, render
from mlops_supervisor.tools.serving._preview import validate_objects
from tests.conftest import CliRun
from tests.test_pipeline import small_spec

PLAIN = {"target": "kubernetes", "kubernetes": {"namespace": "ml", "image": "registry.example/mlops:1.0"}}
KSERVE = {
    "target": "kserve",
    "kubernetes": {"namespace": "ml", "storage_uri": "s3://models/{model}/{version}", "deployment_mode": "Standard"},
}


def test_dry_run_prints_the_plain_form_objects_as_yaml_and_creates_nothing(
    cli: CliRun, tmp_path: Path, workspace: Path
) -> None:
    """A kubernetes spec: version Deployment+Service, routes ConfigMap, router Deployment+Service; no workspace made."""
    spec = small_spec(tmp_path, serving=PLAIN)
    done = cli("deploy", str(spec), "--dry-run", "-o", "yaml", "--version", "3")
    assert done.returncode == 0, done.stderr
    objects = list(yaml.safe_load_all(done.stdout))
    assert [o["kind"] for o in objects] == ["Deployment", "Service", "ConfigMap", "Deployment", "Service"]
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    assert all(o["metadata"]["labels"][LABEL_MODEL] == "small-model" for o in objects)
    assert objects[0]["metadata"]["name"] == "small-model-v3"
    routes = json.loads(next(iter(objects[2]["data"].values())))
    assert {v: r["weight"] for v, r in routes["versions"].items()} == {"3": 100}
    assert "small-model version 3 is not registered" in done.stderr and "models:/small-model/3" in done.stderr
    assert not workspace.exists()  # a preview reads; it writes nothing, here or on a cluster


def _in_process(workspace: Path, *args: str) -> Result:
    """The CLI's app run in this process (its errors left as ``result.exception``; exit codes are main()'s)."""
    return CliRunner().invoke(app, ["--workspace", str(workspace), *args])


def test_dry_run_of_a_kserve_spec_prints_one_inference_service_as_json(tmp_path: Path, workspace: Path) -> None:
    """A kserve spec in Standard mode: one InferenceService with the version's storage URI and the mode annotation."""
    result = _in_process(workspace, "deploy", str(small_spec(tmp_path, serving=KSERVE)), "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    (isvc,) = json.loads(result.stdout)
    assert (isvc["kind"], isvc["metadata"]["namespace"]) == ("InferenceService", "ml")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert "s3://models/small-model/1" in json.dumps(isvc["spec"])


def test_dry_run_of_a_locally_served_spec_has_nothing_to_render(cli: CliRun, tmp_path: Path) -> None:
    """serving.target local: exit 2 (the real entry point) saying there is nothing to render and what to set."""
    done = cli("deploy", str(small_spec(tmp_path, serving={"target": "local"})), "--dry-run")
    assert done.returncode == 2 and done.stdout == ""
    assert "nothing to render" in done.stderr and "serving.target to kubernetes or kserve" in done.stderr


def test_a_real_deploy_names_its_version(tmp_path: Path, workspace: Path) -> None:
    """Without --dry-run the governed deploy needs --version: a UsageError (exit 2) saying how; nothing is opened."""
    spec = small_spec(tmp_path, serving=PLAIN)
    result = _in_process(workspace, "deploy", str(spec))
    assert isinstance(result.exception, UsageError)
    assert f"mlops-supervisor deploy {spec} --version N" in str(result.exception)
    assert not workspace.exists()


def test_a_registered_version_is_rendered_with_its_model_uri_and_evidence_digest(tmp_path: Path) -> None:
    """preview reads the version from the registry: its source as the model URI, the evidence digest as annotation."""
    from mlflow import MlflowClient

    from mlops_supervisor.tools import load_spec

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("small-model")
    client.create_model_version("small-model", "file:///models/small/1", run_id=None)
    shown = preview(load_spec(small_spec(tmp_path, serving=PLAIN)).spec, store_uri=store, tracking_uri=store)
    deployment = shown.objects[0]
    assert (shown.version, shown.notes) == (1, [])
    assert deployment["metadata"]["annotations"][ANN_EVIDENCE].isalnum()
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "file:///models/small/1" in env.values()


def test_a_registered_version_is_rendered_with_the_serving_it_was_trained_with(tmp_path: Path) -> None:
    """What its deploy would use: the serving section of the spec the version's training run logged, not the one
    given (a note says they differ); a version trained to serve locally has nothing to render, whatever is given."""
    from mlflow import MlflowClient

    from mlops_supervisor.tools import load_spec

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    client.create_registered_model("small-model")
    for number, serving in ((1, {**PLAIN, "kubernetes": {**PLAIN["kubernetes"], "namespace": "prod"}}), (2, None)):
        (tmp_path / f"v{number}").mkdir()
        logged = yaml.safe_load(small_spec(tmp_path / f"v{number}", serving=serving or {"target": "local"}).read_text())
        run = client.create_run(client.create_experiment(f"train-{number}"))
        client.log_text(run.info.run_id, yaml.safe_dump(logged), "spec.yaml")
        client.create_model_version(
            "small-model", f"file:///models/small/{number}", tags={"mlops.training.run_id": run.info.run_id}
        )
    given = load_spec(small_spec(tmp_path, serving=PLAIN)).spec  # namespace ml
    shown = preview(given, store_uri=store, tracking_uri=store, version=1)
    assert {o["metadata"]["namespace"] for o in shown.objects} == {"prod"}
    assert shown.notes == [
        "rendered with the serving section small-model version 1 was trained with, which its deploy uses; "
        "the spec given here has another"
    ]
    with pytest.raises(UsageError, match=r"nothing to render: the spec version 2 was trained from serves small-model"):
        preview(given, store_uri=store, tracking_uri=store, version=2)


def test_an_invalid_object_is_refused_naming_it_and_the_field() -> None:
    """A typo'd field fails Kubernetes' strict schema; a string percentage fails KServe's CRD: RunError, named."""
    plain = render(
        "m",
        {1: VersionServing(100, "models:/m/1")},
        KubernetesServing(namespace="ml", image="r/x:1"),
        form="kubernetes",
        tracking_uri="http://mlflow:5000",
    )
    assert validate_objects(plain) == []
    plain[0]["spec"]["replicass"] = 2
    with pytest.raises(RunError, match=r"Deployment ml/m-v1 does not validate .*replicass"):
        validate_objects(plain)
    (isvc,) = render(
        "m",
        {1: VersionServing(100, "s3://b/1")},
        KubernetesServing(namespace="ml", storage_uri="s3://b/{version}"),
        form="kserve",
        tracking_uri="http://mlflow:5000",
    )
    isvc["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    with pytest.raises(RunError, match=r"InferenceService ml/m does not validate against KServe's CRD schema"):
        validate_objects([isvc])
