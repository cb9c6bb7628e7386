"""The rendered Kubernetes and KServe objects: their shape, and that each validates strictly."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import InvalidInputError, RunError, UsageError
from mlops_supervisor.tools._spec import KubernetesServing, PipelineSpec
from mlops_supervisor.tools.serving._manifests import (
    ANN_EVIDENCE,
    ANN_MODEL_URI,
    VersionServing,
    object_name,
    render,
)
from mlops_supervisor.tools.serving._preview import validate_objects

TRACKING = "http://svc:s3cret@mlflow.ml.svc:5000"
PLAIN = KubernetesServing(namespace="ml", image="registry.example/mlops-supervisor:1.0", replicas=2)
STORAGE = "s3://models/{model}/{version}"


def check(manifest: dict[str, Any]) -> None:
    """Raise unless ``manifest`` validates: KServe's CRD (made strict) for an InferenceService, Kubernetes' strict
    schemas for the rest; the same checks ``deploy --dry-run`` runs, and the notes say nothing was left unchecked."""
    assert validate_objects([manifest]) == []


def kserve(mode: str = "Knative", version: str = "0.20") -> KubernetesServing:
    return KubernetesServing.model_validate(
        {"namespace": "ml", "storage_uri": STORAGE, "deployment_mode": mode, "kserve_version": version}
    )


def served(weights: dict[int, int]) -> dict[int, VersionServing]:
    return {v: VersionServing(w, f"models:/churn/{v}", f"sha256:{v:064d}") for v, w in weights.items()}


def test_plain_form_renders_valid_versions_router_and_routes() -> None:
    """The plain form is a Deployment and Service per version plus the router's ConfigMap, Deployment and Service."""
    objects = render("churn", served({3: 90, 4: 10}), PLAIN, form="kubernetes", tracking_uri=TRACKING)
    for obj in objects:
        check(obj)
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Deployment", "churn-v3"),
        ("Service", "churn-v3"),
        ("Deployment", "churn-v4"),
        ("Service", "churn-v4"),
        ("ConfigMap", "churn-routes"),
        ("Deployment", "churn"),
        ("Service", "churn"),
    ]
    v4 = objects[2]
    assert v4["metadata"]["labels"] == {
        "app.kubernetes.io/name": "churn",
        "app.kubernetes.io/managed-by": "mlops-supervisor",
        "mlops-supervisor/model": "churn",
        "mlops-supervisor/version": "4",
        "mlops-supervisor/role": "model",
    }
    assert v4["metadata"]["annotations"][ANN_EVIDENCE] == f"sha256:{4:064d}"
    assert v4["metadata"]["annotations"][ANN_MODEL_URI] == "models:/churn/4"
    container = v4["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLOPS_SERVING_MODEL_URI"] == "models:/churn/4"
    assert env["MLOPS_SERVING_TRACKING_URI"] == "http://mlflow.ml.svc:5000"  # the password never lands in a manifest
    assert "s3cret" not in json.dumps(objects)
    assert "models:/churn/4" not in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert v4["spec"]["replicas"] == 2
    routes = json.loads(objects[4]["data"]["routes.json"])
    assert routes["versions"] == {
        "3": {"url": "http://churn-v3.ml.svc.cluster.local:8080", "weight": 90},
        "4": {"url": "http://churn-v4.ml.svc.cluster.local:8080", "weight": 10},
    }
    router = objects[5]["spec"]["template"]
    assert router["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert router["spec"]["containers"][0]["args"][0] == "router"


def test_knative_canary_is_canary_traffic_percent_on_the_newest_revision() -> None:
    """Knative mode: the spec is the canary's model with canaryTrafficPercent; a promotion drops it."""
    (isvc,) = render("churn", served({3: 90, 4: 10}), kserve(), form="kserve", tracking_uri=TRACKING)
    check(isvc)
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"] == {"modelFormat": {"name": "mlflow"}, "storageUri": "s3://models/churn/4"}
    assert "canary" not in isvc["spec"]
    (promoted,) = render("churn", served({3: 0, 4: 100}), kserve(), form="kserve", tracking_uri=TRACKING)
    check(promoted)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert json.loads(promoted["metadata"]["annotations"]["mlops-supervisor/versions"]).keys() == {"4"}


def test_standard_canary_is_the_spec_canary_list() -> None:
    """Standard mode (0.20+): the stable predictor is named, the canary sits in spec.canary with its share."""
    (isvc,) = render("churn", served({3: 90, 4: 10}), kserve("Standard"), form="kserve", tracking_uri=TRACKING)
    check(isvc)
    assert isvc["spec"]["predictor"]["name"] == "v3"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://models/churn/3"
    (canary,) = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["name"] == "v4"
    assert canary["predictor"]["model"]["name"] == "kserve-container"
    assert "canaryTrafficPercent" not in json.dumps(isvc)
    (first,) = render("churn", served({3: 100}), kserve("Standard"), form="kserve", tracking_uri=TRACKING)
    check(first)
    assert "canary" not in first["spec"]


def test_standard_canary_on_old_kserve_is_refused() -> None:
    """A Standard-mode canary on KServe < 0.20 is refused at render time and in the spec, naming why."""
    with pytest.raises(UsageError, match=r"KServe 0.19 in Standard mode ignores canaryTrafficPercent"):
        render("churn", served({3: 90, 4: 10}), kserve("Standard", "0.19"), form="kserve", tracking_uri=TRACKING)
    (alone,) = render("churn", served({3: 100}), kserve("Standard", "0.19"), form="kserve", tracking_uri=TRACKING)
    check(alone)
    spec = {
        "name": "p",
        "data": {"source": "sklearn:breast_cancer", "target": "target"},
        "training": {"candidates": [{"name": "lr", "estimator": "sklearn.linear_model.LogisticRegression"}]},
        "model": {"name": "churn"},
        "serving": {"target": "kserve", "kubernetes": kserve("Standard", "0.19").model_dump()},
    }
    with pytest.raises(ValueError, match=r"ignores canaryTrafficPercent"):
        PipelineSpec.model_validate(spec)
    PipelineSpec.model_validate({**spec, "deployment": {"canary_steps": [100]}})


def test_the_validators_reject_a_typo_and_a_wrong_type() -> None:
    """The checks can fail: a typo'd field, a string count and a share over 100 are each rejected."""
    deployment, *_ = render("churn", served({3: 100}), PLAIN, form="kubernetes", tracking_uri=TRACKING)
    typo = copy.deepcopy(deployment)
    typo["spec"]["replicass"] = typo["spec"].pop("replicas")
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "2"
    (isvc,) = render("churn", served({3: 90, 4: 10}), kserve("Standard"), form="kserve", tracking_uri=TRACKING)
    isvc_typo = copy.deepcopy(isvc)
    isvc_typo["spec"]["predictor"]["model"]["storageURI"] = isvc_typo["spec"]["predictor"]["model"].pop("storageUri")
    over = copy.deepcopy(isvc)
    over["spec"]["canary"][0]["trafficPercent"] = 101
    unnamed = copy.deepcopy(isvc)
    del unnamed["spec"]["canary"][0]["predictor"]["model"]["name"]
    for bad in (typo, wrong, isvc_typo, over, unnamed):
        with pytest.raises(RunError, match="does not validate against"):
            check(bad)


def test_names_are_dns_labels_that_never_collide() -> None:
    """Object names are DNS-1123 labels; a name that had to change gets a hash, so two models never share one."""
    assert object_name("churn") == "churn"
    names = {object_name(m) for m in ("Churn", "churn", "churn@staging", "churn-staging", "x" * 64, "x" * 63 + "y")}
    assert len(names) == 6
    for name in names:
        assert len(name) <= 40 and name == name.lower() and name[0].isalnum() and name[-1].isalnum()
    objects = render("Churn_Model@staging", served({1: 100}), PLAIN, form="kubernetes", tracking_uri=TRACKING)
    for obj in objects:
        check(obj)
    assert objects[0]["metadata"]["annotations"]["mlops-supervisor/endpoint"] == "Churn_Model@staging"


def test_bad_weights_and_missing_settings_are_refused() -> None:
    """Weights that do not sum to 100, three KServe versions and a missing image or storage are refused."""
    with pytest.raises(InvalidInputError, match="sum to 100"):
        render("churn", served({3: 90, 4: 20}), PLAIN, form="kubernetes", tracking_uri=TRACKING)
    with pytest.raises(InvalidInputError, match="two versions"):
        render("churn", served({3: 80, 4: 10, 5: 10}), kserve(), form="kserve", tracking_uri=TRACKING)
    with pytest.raises(UsageError, match="image"):
        render("churn", served({3: 100}), kserve(), form="kubernetes", tracking_uri=TRACKING)
    with pytest.raises(UsageError, match="storage_uri"):
        render("churn", served({3: 100}), PLAIN, form="kserve", tracking_uri=TRACKING)


def test_the_shipped_rbac_validates_and_grants_only_namespaced_verbs() -> None:
    """deploy/kubernetes/rbac.yaml validates strictly; it holds Roles only (nothing cluster-wide), no wildcard."""
    rbac = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rbac.yaml"
    documents = list(yaml.safe_load_all(rbac.read_text()))
    for document in documents:
        check(document)
    assert {d["kind"] for d in documents} == {"ServiceAccount", "Role", "RoleBinding"}
    for role in (d for d in documents if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            assert not {"update", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        ({"target": "kubernetes"}, r"serving.target kubernetes needs serving.kubernetes.image"),
        (
            {"target": "kserve", "kubernetes": {"image": "x"}},
            r"serving.target kserve needs serving.kubernetes.storage_uri",
        ),
        ({"kubernetes": {"namespace": "ML_prod"}}, r"namespace 'ML_prod' must be a DNS-1123 label"),
        ({"kubernetes": {"storage_uri": "models:/churn/{version}"}}, r"models:/ and runs:/ are MLflow's own URIs"),
        ({"kubernetes": {"storage_uri": "s3://models/churn"}}, r"must contain \{version\}"),
        ({"kubernetes": {"kserve_version": "latest"}}, r"kserve_version 'latest' must be MAJOR.MINOR"),
        ({"kubernetes": {"replicas": 0}}, r"replicas"),
    ],
)
def test_the_spec_refuses_a_kubernetes_section_that_cannot_serve(serving: dict[str, Any], message: str) -> None:
    """Each unusable serving.kubernetes setting is refused by the spec, naming the field and what it needs."""
    from mlops_supervisor.tools._spec import ServingSpec

    with pytest.raises(ValueError, match=message):
        ServingSpec.model_validate(serving)
