"""The Kubernetes serving backend, driving the real ``kubernetes`` client against an API emulator on loopback.

The test plays the controller: the emulator's ``controller`` marks what was applied ready (or
leaves it starting), as a real Deployment controller or KServe would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import InvalidInputError, RunError, UsageError
from mlops_supervisor.tools._spec import KubernetesServing
from mlops_supervisor.tools.serving._kubernetes import Form, KubernetesBackend
from tests._kube import KubeEmulator, fault

NS = "ml"
APPLY = "application/apply-patch+yaml"
DEPLOYMENTS, SERVICES, CONFIGMAPS = "apps/v1/deployments", "v1/services", "v1/configmaps"
ISVCS = "serving.kserve.io/v1beta1/inferenceservices"
PLAIN = KubernetesServing(namespace=NS, image="registry.example/mlops-supervisor:1.0", ready_timeout_s=1)


def kserve(mode: str = "Knative") -> KubernetesServing:
    return KubernetesServing.model_validate(
        {"namespace": NS, "storage_uri": "s3://models/{model}/{version}", "deployment_mode": mode, "ready_timeout_s": 1}
    )


def controller(*, never: frozenset[str] = frozenset()) -> Callable[[str, dict[str, Any]], dict[str, Any] | None]:
    """Mark every applied Deployment or InferenceService ready at once, except those named in ``never``."""

    def react(resource: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        if obj["metadata"]["name"] in never:
            return None
        seen = {"observedGeneration": obj["metadata"]["generation"]}
        if resource == DEPLOYMENTS:
            return {**seen, "readyReplicas": obj["spec"]["replicas"], "updatedReplicas": obj["spec"]["replicas"]}
        if resource == ISVCS:
            kinds = ("Ready", "PredictorReady", "LatestDeploymentReady", "CanaryPredictorReady")
            return {
                **seen,
                "url": "http://churn.ml.example.com",
                "conditions": [{"type": k, "status": "True"} for k in kinds],
            }
        return None

    return react


@pytest.fixture
def emu(kube: KubeEmulator) -> KubeEmulator:
    kube.k.controller = controller()
    return kube


def backend(emu: KubeEmulator, serving: KubernetesServing = PLAIN, **kwargs: Any) -> KubernetesBackend:
    form: Form = "kserve" if serving.storage_uri else "kubernetes"
    return KubernetesBackend(
        emu.api_client(), form=form, serving=serving, tracking_uri="http://mlflow.ml.svc:5000", **kwargs
    )


def writes(emu: KubeEmulator, since: int = 0) -> list[tuple[str, str]]:
    """(method, path) of each write since request ``since``."""
    return [(r.method.value, r.url.path) for r in emu.requests[since:] if r.method != "GET"]


def routes(emu: KubeEmulator) -> dict[str, int]:
    data = json.loads(emu.stored(CONFIGMAPS, NS)["churn-routes"]["data"]["routes.json"])
    return {v: r["weight"] for v, r in data["versions"].items()}


RBAC = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rbac.yaml"


def granted(role: str) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) that ``role`` in deploy/kubernetes/rbac.yaml grants."""
    (found,) = [
        d for d in yaml.safe_load_all(RBAC.read_text()) if d["kind"] == "Role" and d["metadata"]["name"] == role
    ]
    return {
        (g, r, v)
        for rule in found["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def used(emu: KubeEmulator) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every request made, as the API server's authorizer would ask for it."""
    out: set[tuple[str, str, str]] = set()
    for r in emu.requests:
        if r.resource is None:
            continue
        group, plural = r.resource.group or "", str(r.resource.plural)
        if r.method == "GET":
            verbs = ["watch"] if r.params.get("watch") == "true" else ["get"] if r.name else ["list"]
        else:
            verbs = {"PATCH": ["patch", "create"], "DELETE": ["delete"]}[r.method.value]
        out |= {(group, plural, verb) for verb in verbs}
    return out


def path(resource: str, name: str) -> str:
    prefix = "/api/v1" if resource.startswith("v1/") else f"/apis/{resource.rsplit('/', 1)[0]}"
    return f"{prefix}/namespaces/{NS}/{resource.rsplit('/', 1)[1]}/{name}"


def test_plain_deploy_applies_server_side_with_our_field_manager(emu: KubeEmulator) -> None:
    """A first version: its Deployment and Service, then the router's routes, Deployment and Service, all applied."""
    status = backend(emu).deploy("churn", 1, "models:/churn/1", weight=100, evidence_digest="sha256:ab")
    assert writes(emu) == [
        ("PATCH", path(DEPLOYMENTS, "churn-v1")),
        ("PATCH", path(SERVICES, "churn-v1")),
        ("PATCH", path(CONFIGMAPS, "churn-routes")),
        ("PATCH", path(DEPLOYMENTS, "churn")),
        ("PATCH", path(SERVICES, "churn")),
    ]
    for request in emu.requests:
        if request.method == "PATCH":
            assert request.params == {"fieldManager": "mlops-supervisor", "force": "true"}
            assert request.headers["Content-Type"] == APPLY
    body = next(r.data for r in emu.requests if r.method == "PATCH")
    assert body["metadata"]["labels"]["mlops-supervisor/version"] == "1"
    assert body["metadata"]["annotations"]["mlops-supervisor/evidence-digest"] == "sha256:ab"
    assert status["versions"] == {
        1: {
            "weight": 100,
            "alive": True,
            "model_uri": "models:/churn/1",
            "evidence_digest": "sha256:ab",
            "ready_replicas": 1,
            "replicas": 1,
            "name": "churn-v1",
        }
    }
    assert status["router"]["url"] == "http://churn.ml.svc.cluster.local:8080" and status["router"]["alive"]
    assert routes(emu) == {"1": 100}


def test_plain_canary_weights_promotion_rollback_scale_and_stop(emu: KubeEmulator) -> None:
    """A canary at 10 %, then 50 %, a promotion, a rollback, a scale and a stop, each as the writes it takes."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    start = len(emu.requests)
    status = b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert writes(emu, start)[:2] == [("PATCH", path(DEPLOYMENTS, "churn-v2")), ("PATCH", path(SERVICES, "churn-v2"))]
    assert routes(emu) == {"1": 90, "2": 10}
    assert {v: s["weight"] for v, s in status["versions"].items()} == {1: 90, 2: 10}
    start = len(emu.requests)
    b.set_weights("churn", {1: 50, 2: 50})
    assert ("PATCH", path(CONFIGMAPS, "churn-routes")) in writes(emu, start)
    assert not any("churn-v" in p for _, p in writes(emu, start))  # the versions are not touched
    assert routes(emu) == {"1": 50, "2": 50}
    b.set_weights("churn", {1: 0, 2: 100})
    assert routes(emu) == {"1": 0, "2": 100}
    start = len(emu.requests)
    status = b.rollback("churn", 1)
    assert routes(emu) == {"1": 100}
    assert writes(emu, start)[-2:] == [
        ("DELETE", path(DEPLOYMENTS, "churn-v2")),
        ("DELETE", path(SERVICES, "churn-v2")),
    ]
    assert list(status["versions"]) == [1] and status["stray"] == []
    status = b.scale("churn", 1, 3)
    assert emu.stored(DEPLOYMENTS, NS)["churn-v1"]["spec"]["replicas"] == 3
    assert status["versions"][1]["ready_replicas"] == 3
    assert b.models() == ["churn"]
    with pytest.raises(InvalidInputError, match=r"weights \{1: 60, 7: 40\} must name deployed versions of churn \(1\)"):
        b.set_weights("churn", {1: 60, 7: 40})
    stopped = b.stop("churn")
    assert stopped["stopped"] == 5 and emu.snapshot() == {}
    assert used(emu) <= granted("mlops-supervisor-serving")
    assert b.status("churn")["versions"] == {} and b.status("churn")["router"] is None


def test_a_third_version_takes_its_share_from_the_others_in_proportion(emu: KubeEmulator) -> None:
    """Shares are scaled and rounded so they always sum to 100; a version at 0 % stays routed (as locally)."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    b.deploy("churn", 2, "models:/churn/2", weight=50)
    b.deploy("churn", 3, "models:/churn/3", weight=33)
    assert routes(emu) == {"1": 33, "2": 34, "3": 33}
    b.set_weights("churn", {1: 0, 2: 0, 3: 100})
    b.deploy("churn", 4, "models:/churn/4", weight=10)
    assert routes(emu) == {"1": 0, "2": 0, "3": 90, "4": 10}


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_kserve_canary_promotion_rollback_and_stop(emu: KubeEmulator, mode: str) -> None:
    """KServe: one InferenceService applied per step; the canary as canaryTrafficPercent (Knative) or spec.canary."""
    b = backend(emu, kserve(mode))
    b.deploy("churn", 1, "models:/churn/1", weight=100, evidence_digest="sha256:01")
    status = b.deploy("churn", 2, "models:/churn/2", weight=10, evidence_digest="sha256:02")
    isvc_path = path(ISVCS, "churn")
    assert {p for _, p in writes(emu)} == {isvc_path}
    applied = [r for r in emu.requests if r.method == "PATCH"]
    assert all(r.params == {"fieldManager": "mlops-supervisor", "force": "true"} for r in applied)
    spec = applied[-1].data["spec"]
    assert applied[-1].data["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    if mode == "Knative":
        assert spec["predictor"]["canaryTrafficPercent"] == 10
        assert spec["predictor"]["model"]["storageUri"] == "s3://models/churn/2"
    else:
        assert spec["predictor"]["model"]["storageUri"] == "s3://models/churn/1"
        assert spec["canary"][0]["trafficPercent"] == 10
        assert spec["canary"][0]["predictor"]["model"]["storageUri"] == "s3://models/churn/2"
    assert {v: (s["weight"], s["alive"], s["role"]) for v, s in status["versions"].items()} == {
        1: (90, True, "stable"),
        2: (10, True, "canary"),
    }
    b.set_weights("churn", {1: 50, 2: 50})
    spec = emu.stored(ISVCS, NS)["churn"]["spec"]
    assert (
        spec["predictor"].get("canaryTrafficPercent") if mode == "Knative" else spec["canary"][0]["trafficPercent"]
    ) == 50
    status = b.rollback("churn", 1)
    spec = emu.stored(ISVCS, NS)["churn"]["spec"]
    assert spec["predictor"]["model"]["storageUri"] == "s3://models/churn/1"
    assert "canary" not in spec and "canaryTrafficPercent" not in spec["predictor"]
    assert list(status["versions"]) == [1]
    b.deploy("churn", 2, "models:/churn/2", weight=10)
    status = b.set_weights("churn", {1: 0, 2: 100})  # the promotion: the canary serves alone
    spec = emu.stored(ISVCS, NS)["churn"]["spec"]
    assert spec["predictor"]["model"]["storageUri"] == "s3://models/churn/2"
    assert "canary" not in spec and "canaryTrafficPercent" not in spec["predictor"]
    assert spec["predictor"].get("name") == (None if mode == "Knative" else "v2")
    assert {v: s["weight"] for v, s in status["versions"].items()} == {2: 100}
    b.scale("churn", 2, 3)
    assert emu.stored(ISVCS, NS)["churn"]["spec"]["predictor"]["minReplicas"] == 3
    assert b.models() == ["churn"]
    b.stop("churn")
    assert writes(emu)[-1] == ("DELETE", isvc_path) and emu.snapshot() == {}
    assert used(emu) <= granted("mlops-supervisor-kserve")


def test_standard_canary_pruned_by_an_old_kserve_is_undone_and_refused(emu: KubeEmulator) -> None:
    """A cluster whose KServe drops spec.canary (older than 0.20): the canary is undone and refused, v1 serves on."""
    b = backend(emu, kserve("Standard"))
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    before = emu.stored(ISVCS, NS)["churn"]["spec"]
    ready = controller()

    def old_kserve(resource: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        obj["spec"].pop("canary", None)
        emu.k.objects[(next(iter(emu.k.objects))[0], NS, "churn")].create(obj)  # pruned as an old CRD would
        return ready(resource, obj)

    emu.k.controller = old_kserve
    with pytest.raises(
        UsageError,
        match=r"InferenceService ml/churn lost spec.canary .* older than 0.20.*undone: restored InferenceService churn",
    ):
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert emu.stored(ISVCS, NS)["churn"]["spec"] == before


ERRORS = [
    (401, "Unauthorized", UsageError, r"unauthorized \(401\).*check the kubeconfig"),
    (403, "Forbidden", UsageError, r"forbidden \(403\).*Role in deploy/kubernetes/rbac.yaml bound in namespace ml"),
    (404, "NotFound", UsageError, r"not found \(404\).*check that namespace ml exists"),
    (409, "Conflict", RunError, r"conflict \(409\).*another field manager"),
    (422, "Invalid", RunError, r"invalid \(422\): spec.replicas: must be positive; fix that field"),
]


@pytest.mark.parametrize(("status", "reason", "error", "message"), ERRORS, ids=[str(e[0]) for e in ERRORS])
def test_each_api_error_is_one_message_naming_the_object_and_the_store_is_unchanged(
    emu: KubeEmulator, status: int, reason: str, error: type[Exception], message: str
) -> None:
    """401, 403, 404, 409 and 422 on the new version's apply: one message naming it; nothing changed, traffic stays."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    before = emu.snapshot()
    details = {"causes": [{"field": "spec.replicas", "message": "must be positive"}]} if status == 422 else {}
    injected = fault(status, reason, "refused by the test")
    injected = type(injected)(status=status, reason=reason, message="refused by the test", details=details)
    emu.inject(lambda r: r.method == "PATCH" and r.name == "churn-v2", injected)
    with pytest.raises(error, match=message) as caught:
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert f"apply Deployment {NS}/churn-v2 on {emu.url}" in str(caught.value)
    assert emu.snapshot() == before


def test_a_failure_midway_undoes_what_the_call_applied(emu: KubeEmulator) -> None:
    """The routes refused after the new version started: the version's objects are deleted, and the message says so."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    before = emu.snapshot()
    emu.inject(lambda r: r.method == "PATCH" and r.name == "churn-routes", fault(403, "Forbidden", "no configmaps"))
    with pytest.raises(
        UsageError,
        match=r"ConfigMap ml/churn-routes .*forbidden.*undone: deleted Service churn-v2, deleted Deployment churn-v2",
    ):
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert emu.snapshot().keys() == before.keys() and routes(emu) == {"1": 100}


def test_an_undo_that_fails_too_lists_what_is_left(emu: KubeEmulator) -> None:
    """When the undo is refused as well, the message names each object left applied."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    emu.inject(lambda r: r.method == "PATCH" and r.name == "churn-routes", fault(403, "Forbidden", "no configmaps"))
    emu.inject(lambda r: r.method == "DELETE", fault(403, "Forbidden", "no deletes"), times=2)
    with pytest.raises(
        UsageError, match=r"NOT undone, left as applied: Service ml/churn-v2 .*; Deployment ml/churn-v2"
    ):
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert {"churn-v2"} <= emu.stored(DEPLOYMENTS, NS).keys()  # it is there, as the message says
    assert routes(emu) == {"1": 100}
    assert b.status("churn")["stray"] == [
        {"kind": "Deployment", "name": "churn-v2", "pid": None}
    ]  # and status shows it, for stop to remove
    b.stop("churn")
    assert emu.snapshot() == {}


def test_a_rollout_that_never_becomes_ready_is_rolled_back(emu: KubeEmulator) -> None:
    """A version never ready within ready_timeout_s: its objects are removed, traffic never moved, the message says why."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    emu.k.controller = controller(never=frozenset({"churn-v2"}))
    with pytest.raises(
        RunError,
        match=r"rollout of Deployment ml/churn-v2 was rolled back: not ready after 1 s; 0/1 replicas ready.*image pull.*undone: deleted Service churn-v2, deleted Deployment churn-v2",
    ):
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert "churn-v2" not in emu.stored(DEPLOYMENTS, NS) and routes(emu) == {"1": 100}
    assert ("apps", "deployments", "watch") in used(emu) <= granted("mlops-supervisor-serving")


def test_a_rollback_whose_router_is_slow_is_kept_not_undone(emu: KubeEmulator) -> None:
    """A rollback whose router pods are not ready in time: the routes stay on the version rolled back to (never
    back on the bad canary), the canary is kept until they are, and the message says so; each route change rolls
    the router pods (a new routes digest on their template), since a mounted ConfigMap syncs only every minute or so."""
    b = backend(emu)
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    b.deploy("churn", 2, "models:/churn/2", weight=10)

    def digest() -> str:
        template = emu.stored(DEPLOYMENTS, NS)["churn"]["spec"]["template"]["metadata"]["annotations"]
        return str(template["mlops-supervisor/routes-sha256"])

    canary_routes = digest()
    emu.k.controller = controller(never=frozenset({"churn"}))  # the router's Deployment
    with pytest.raises(
        RunError, match=r"Deployment ml/churn is not ready: not ready after 1 s.*a rollback is never undone"
    ):
        b.rollback("churn", 1)
    assert routes(emu) == {"1": 100} and digest() != canary_routes
    assert "churn-v2" in emu.stored(DEPLOYMENTS, NS)  # deleted only once the routers no longer send to it


def test_a_kserve_rollout_never_ready_restores_the_previous_service(emu: KubeEmulator) -> None:
    """An InferenceService canary never Ready in time: the previous spec is applied back and storageUri is named."""
    b = backend(emu, kserve())
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    before = emu.stored(ISVCS, NS)["churn"]["spec"]
    emu.k.controller = controller(never=frozenset({"churn"}))
    with pytest.raises(
        RunError,
        match=r"InferenceService ml/churn was rolled back: not ready after 1 s.*storageUri.*restored InferenceService churn",
    ):
        b.deploy("churn", 2, "models:/churn/2", weight=10)
    assert emu.stored(ISVCS, NS)["churn"]["spec"] == before


def test_a_stalled_api_server_is_a_timeout_naming_the_object(emu: KubeEmulator) -> None:
    """An apply that gets no answer within the request timeout: one message, and nothing changed."""
    b = backend(emu, request_timeout=0.3)
    emu.inject(lambda r: r.method == "PATCH", 2.0)
    with pytest.raises(
        RunError, match=r"apply Deployment ml/churn-v1 .*no answer within 0.3 s; check the API server address"
    ):
        b.deploy("churn", 1, "models:/churn/1", weight=100)
    assert emu.snapshot() == {}


def test_a_stopped_api_server_is_connection_refused(emu: KubeEmulator) -> None:
    """No API server listening: one message naming the object and the address to check."""
    b = backend(emu)
    emu.stop()
    with pytest.raises(
        RunError, match=r"list Deployment ml/\* on http://127.0.0.1:\d+: cannot reach the API server .*server address"
    ):
        b.deploy("churn", 1, "models:/churn/1", weight=100)


def test_metrics_are_the_readers_and_the_host_is_exposed(emu: KubeEmulator) -> None:
    """read_metrics asks the configured reader (an error without one); ``host`` is the API server's, for egress."""
    seen: list[str] = []

    def reader(model: str) -> dict[str, dict[str, Any]]:
        seen.append(model)
        return {"1": {"requests": 3.0, "errors": 0.0, "buckets": {}}}

    b = backend(emu, metrics=reader)
    assert b.read_metrics("churn") == {"1": {"requests": 3.0, "errors": 0.0, "buckets": {}}} and seen == ["churn"]
    with pytest.raises(RunError, match="no metrics reader for churn on Kubernetes"):
        backend(emu).read_metrics("churn")  # never an empty window in place of evidence
    assert b.host == "127.0.0.1"


def test_from_config_reads_a_kubeconfig_and_names_a_bad_one(
    emu: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kubeconfig's cluster is used, ~/.kube/config when none is named; a missing file or context is a UsageError
    naming it, and with no kubeconfig anywhere and no pod, the error names every place looked at."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "me", "namespace": NS}}],
                "current-context": "emu",
            }
        )
    )
    b = KubernetesBackend.from_config(
        form="kubernetes", serving=PLAIN, tracking_uri="http://m:5000", kubeconfig=kubeconfig
    )
    assert b.host == "127.0.0.1" and b.models() == []
    assert emu.requests[-1].headers["Authorization"] == "Bearer t0ken"
    with pytest.raises(UsageError, match=r"context nope.*MLOPS_KUBECONFIG"):
        KubernetesBackend.from_config(
            form="kubernetes", serving=PLAIN, tracking_uri="x", kubeconfig=kubeconfig, context="nope"
        )
    with pytest.raises(UsageError, match=r"in-cluster service account.*KUBECONFIG.*~/.kube/config.*inside a pod"):
        KubernetesBackend.from_config(form="kubernetes", serving=PLAIN, tracking_uri="x")
    # kubectl's default place, read when nothing names a kubeconfig
    (tmp_path / "home" / ".kube").mkdir(parents=True)
    (tmp_path / "home" / ".kube" / "config").write_text(kubeconfig.read_text())
    served = KubernetesBackend.from_config(form="kubernetes", serving=PLAIN, tracking_uri="x")
    assert served.models() == [] and emu.requests[-1].headers["Authorization"] == "Bearer t0ken"


def test_status_reads_what_the_controller_reports(emu: KubeEmulator) -> None:
    """Status is the cluster's: KServe traffic, canary statuses and conditions; a failed canary predictor is not alive."""
    b = backend(emu, kserve("Standard"))
    b.deploy("churn", 1, "models:/churn/1", weight=100)
    b.deploy("churn", 2, "models:/churn/2", weight=10)
    conditions = [
        {"type": "Ready", "status": "True"},
        {"type": "PredictorReady", "status": "True"},
        {"type": "CanaryPredictorReady", "status": "False", "message": "ImagePullBackOff"},
    ]
    canaries = [{"name": "v2", "ready": False, "trafficPercent": 10}]
    emu.set_status(ISVCS, NS, "churn", {"conditions": conditions, "canaryStatuses": canaries})
    status = b.status("churn")
    assert {v: s["alive"] for v, s in status["versions"].items()} == {1: True, 2: False}
    assert status["conditions"] == conditions and status["canary_statuses"] == canaries
    assert status["router"] == {"url": "http://churn.ml.example.com", "alive": True, "name": "churn"}
    plain = backend(emu)
    plain.deploy("churn", 1, "models:/churn/1", weight=100)
    emu.set_status(DEPLOYMENTS, NS, "churn-v1", {"readyReplicas": 0})
    assert plain.status("churn")["versions"][1]["alive"] is False
