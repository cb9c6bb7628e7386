"""The Kubernetes objects of one endpoint, rendered as plain dicts: no client, no cluster.

Two forms (``serving.target`` in the spec):

- ``kubernetes``: per version a Deployment and a Service running this package's model server
  (``_main model``), and in front of them a router Deployment and Service (``_main router``)
  whose routes (weights, and the versions' Service DNS names) are a ConfigMap mounted as
  ``routes.json``; a weight change is a ConfigMap write the router picks up, not a restart.
- ``kserve``: one ``serving.kserve.io/v1beta1`` InferenceService per endpoint with
  ``modelFormat: mlflow`` and a ``storageUri`` per version. A canary is
  ``spec.predictor.canaryTrafficPercent`` in Knative mode (KServe keeps the previous revision
  for the rest), and the ``spec.canary`` list in Standard mode, which KServe has had since 0.20;
  older Standard mode ignores ``canaryTrafficPercent``, so a canary there is refused.

Every object carries the common labels (``app.kubernetes.io/name``, ``managed-by``, the model,
and the version on per-version objects) and annotations (the endpoint's exact name, the model
URI, the digest of the evidence the gate read). ``render`` gives the whole list; the tests
validate each object strictly against Kubernetes ``KUBERNETES_VERSION``'s schemas and KServe's CRD.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops_supervisor.policies import InvalidInputError, UsageError
from mlops_supervisor.tools.serving._backend import MODEL_URI_VAR, TRACKING_URI_VAR

if TYPE_CHECKING:
    from mlops_supervisor.tools._spec import KubernetesServing

__all__ = [
    "ANN_CANARY",
    "ANN_ENDPOINT",
    "ANN_EVIDENCE",
    "ANN_MODEL_URI",
    "ANN_VERSIONS",
    "ANN_WEIGHT",
    "BIND_HOST_VAR",
    "DEPLOYMENT_MODE",
    "KUBERNETES_VERSION",
    "LABEL_MODEL",
    "LABEL_ROLE",
    "LABEL_VERSION",
    "MANAGED_BY",
    "MLFLOW_SECRET",
    "PORT",
    "Form",
    "VersionServing",
    "canary_of",
    "check_weights",
    "inference_service",
    "model_label",
    "object_name",
    "plain_router",
    "plain_version",
    "render",
    "router_url",
    "selector",
    "storage_uri",
    "version_name",
]

KUBERNETES_VERSION = "1.33"
"""The Kubernetes minor the manifests are written for and validated against (strict schemas)."""
Form = Literal["kubernetes", "kserve"]
MANAGED_BY = "mlops-supervisor"
LABEL_MODEL = "mlops-supervisor/model"
LABEL_VERSION = "mlops-supervisor/version"
LABEL_ROLE = "mlops-supervisor/role"
ANN_ROUTES_DIGEST = "mlops-supervisor/routes-sha256"
ANN_ENDPOINT = "mlops-supervisor/endpoint"
ANN_EVIDENCE = "mlops-supervisor/evidence-digest"
ANN_MODEL_URI = "mlops-supervisor/model-uri"
ANN_WEIGHT = "mlops-supervisor/weight"
ANN_VERSIONS = "mlops-supervisor/versions"
ANN_CANARY = "mlops-supervisor/canary"
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
PORT = 8080
BIND_HOST_VAR = "MLOPS_SERVING_HOST"
"""Where a server in a pod listens: every interface (a Service reaches it), not loopback."""
MLFLOW_SECRET = "mlops-supervisor-mlflow"
"""The optional Secret whose MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD the model servers get."""
_MAX_BASE = 40  # leaves room for "-v<version>" and KServe's "-<name>-predictor-…" suffixes within 63
_STATE = "/var/lib/mlops-supervisor"
_ROUTES_MOUNT = "/etc/mlops-supervisor/routes"
_ENTRY = ["python", "-m", "mlops_supervisor.tools.serving._main"]
_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


@dataclass(frozen=True)
class VersionServing:
    """One version of an endpoint: its share of traffic, its model, and the gate evidence that let it in."""

    weight: int
    model_uri: str
    evidence_digest: str | None = None


def object_name(model: str) -> str:
    """The DNS-1123 base name of ``model``'s objects: itself when already one, else cleaned with a hash suffix.

    The suffix (from the exact name) keeps two names that clean to the same text apart
    (``Churn`` and ``churn``, ``churn@staging`` and ``churn-staging``).
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
    if clean == model and len(clean) <= _MAX_BASE:
        return clean
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:8]
    return f"{clean[: _MAX_BASE - 9].rstrip('-') or 'model'}-{digest}"


def model_label(model: str) -> str:
    """``model`` as a label value (the object base name: a label value cannot hold every model name)."""
    return object_name(model)


def version_name(model: str, version: int) -> str:
    """The Deployment and Service of one version (plain form)."""
    return f"{object_name(model)}-v{version}"


def selector(model: str) -> str:
    """The label selector of every object this project made for ``model``."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{LABEL_MODEL}={model_label(model)}"


def router_url(model: str, namespace: str) -> str:
    """The router Service's in-cluster URL (plain form)."""
    return f"http://{object_name(model)}.{namespace}.svc.cluster.local:{PORT}"


def storage_uri(serving: KubernetesServing, model: str, version: int) -> str:
    """Where KServe downloads ``version``'s MLflow model from: ``serving.storage_uri`` filled in."""
    if serving.storage_uri is None:
        raise UsageError(
            "serving.kubernetes.storage_uri is not set; target kserve needs it (e.g. s3://models/{model}/{version})"
        )
    return serving.storage_uri.format(model=model, version=version)


def check_weights(model: str, versions: Mapping[int, VersionServing]) -> None:
    """Refuse weights that are negative, over 100 or do not sum to 100 (``InvalidInputError``, naming them)."""
    weights = {v: s.weight for v, s in versions.items()}
    if not versions or any(not 0 <= w <= 100 for w in weights.values()) or sum(weights.values()) != 100:
        raise InvalidInputError("invalid_weights", f"weights {weights} of {model} must each be 0..100 and sum to 100")


def canary_of(versions: Mapping[int, VersionServing], canary: int | None = None) -> tuple[int, int | None]:
    """``(stable, canary)``: the canary is ``canary`` when given (else the newest version), the stable the other.

    One version is stable alone; KServe serves at most a stable and a canary, so more are refused.
    """
    if len(versions) == 1:
        return next(iter(versions)), None
    if len(versions) != 2:
        raise InvalidInputError(
            "too_many_versions",
            f"KServe serves two versions of an endpoint at most (a stable and a canary); got {sorted(versions)}",
        )
    newest = canary if canary in versions else max(versions)
    (stable,) = [v for v in versions if v != newest]
    return stable, newest


def _labels(model: str, version: int | None = None, role: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": model_label(model),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_MODEL: model_label(model),
    }
    if version is not None:
        labels[LABEL_VERSION] = str(version)
    if role is not None:
        labels[LABEL_ROLE] = role
    return labels


def _meta(name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}


def _probes() -> dict[str, Any]:
    check = {"httpGet": {"path": "/health", "port": PORT}}
    return {
        "readinessProbe": {**check, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**check, "initialDelaySeconds": 30, "periodSeconds": 10, "failureThreshold": 6},
    }


def _deployment(
    name: str,
    namespace: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    replicas: int,
    pod: dict[str, Any],
    pod_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    match = {k: v for k, v in labels.items() if k in (LABEL_MODEL, LABEL_VERSION, LABEL_ROLE)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, labels, annotations),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": match},
            "template": {"metadata": {"labels": labels, "annotations": pod_annotations or {}}, "spec": pod},
        },
    }


def _service(name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": {k: v for k, v in labels.items() if k in (LABEL_MODEL, LABEL_VERSION, LABEL_ROLE)},
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }


def _pod(image: str, args: list[str], env: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "command": _ENTRY,
        "args": args,
        "env": [{"name": BIND_HOST_VAR, "value": "0.0.0.0"}, {"name": "HOME", "value": "/tmp"}, *env],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *extra.pop("mounts", [])],
        **_probes(),
        **extra.pop("container", {}),
    }
    return {
        "automountServiceAccountToken": False,  # the servers never call the API server
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *extra.pop("volumes", [])],
        **extra,
    }


def _without_credentials(uri: str) -> str:
    """``uri`` without ``user:password@``: credentials go by the optional Secret, never into a manifest."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", uri)


def plain_version(
    model: str, version: int, served: VersionServing, serving: KubernetesServing, *, tracking_uri: str
) -> list[dict[str, Any]]:
    """The Deployment and Service of one version's model server (plain form)."""
    if serving.image is None:
        raise UsageError("serving.kubernetes.image is not set; target kubernetes needs the image of this package")
    name, ns = version_name(model, version), serving.namespace
    labels = _labels(model, version, "model")
    annotations = {ANN_ENDPOINT: model, ANN_MODEL_URI: served.model_uri}
    if served.evidence_digest:
        annotations[ANN_EVIDENCE] = served.evidence_digest
    env: list[dict[str, Any]] = [
        {"name": MODEL_URI_VAR, "value": served.model_uri},
        {"name": TRACKING_URI_VAR, "value": _without_credentials(tracking_uri)},
        {"name": "MLFLOW_TRACKING_USERNAME", "valueFrom": {"secretKeyRef": _secret_key("username")}},
        {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": _secret_key("password")}},
    ]
    pod = _pod(serving.image, ["model", "--version", str(version), "--port", str(PORT)], env)
    return [
        _deployment(name, ns, labels, annotations, serving.replicas, pod),
        _service(name, ns, labels, {ANN_ENDPOINT: model}),
    ]


def _secret_key(key: str) -> dict[str, Any]:
    return {"name": MLFLOW_SECRET, "key": key, "optional": True}


def routes(model: str, versions: Mapping[int, VersionServing], namespace: str, sample_rate: float) -> dict[str, Any]:
    """The router's ``routes.json``: each version's weight and its Service's in-cluster URL."""
    return {
        "sample_rate": sample_rate,
        "versions": {
            str(v): {
                "url": f"http://{version_name(model, v)}.{namespace}.svc.cluster.local:{PORT}",
                "weight": s.weight,
            }
            for v, s in sorted(versions.items())
        },
    }


def plain_router(
    model: str, versions: Mapping[int, VersionServing], serving: KubernetesServing, *, sample_rate: float = 0.1
) -> list[dict[str, Any]]:
    """The router's ConfigMap (routes), Deployment and Service (plain form).

    The router keeps its prediction log and samples beside its routes file, so the routes are
    linked from the ConfigMap's (read-only, atomically swapped) mount into a writable folder; the
    link follows each swap, and the router re-reads the file when its mtime changes.
    """
    if serving.image is None:
        raise UsageError("serving.kubernetes.image is not set; target kubernetes needs the image of this package")
    base, ns = object_name(model), serving.namespace
    labels = _labels(model, role="router")
    weights = json.dumps({str(v): s.weight for v, s in sorted(versions.items())}, separators=(",", ":"))
    table = json.dumps(routes(model, versions, ns, sample_rate), indent=1, sort_keys=True)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{base}-routes", ns, labels, {ANN_ENDPOINT: model, ANN_VERSIONS: weights}),
        "data": {"routes.json": table},
    }
    home = f"{_STATE}/serving/endpoint"
    link = {
        "name": "routes-link",
        "image": serving.image,
        "command": ["/bin/sh", "-c", f"mkdir -p {home} && ln -sf {_ROUTES_MOUNT}/routes.json {home}/routes.json"],
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{"name": "state", "mountPath": _STATE}],
    }
    pod = _pod(
        serving.image,
        ["router", "--routes", f"{home}/routes.json", "--samples", f"{home}/samples.jsonl", "--port", str(PORT)],
        [],
        mounts=[
            {"name": "state", "mountPath": _STATE},
            {"name": "routes", "mountPath": _ROUTES_MOUNT, "readOnly": True},
        ],
        volumes=[
            {"name": "state", "emptyDir": {}},
            {"name": "routes", "configMap": {"name": f"{base}-routes"}},
        ],
        initContainers=[link],
    )
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}
    # The kubelet syncs a mounted ConfigMap only every minute or two; a new checksum on the pod template rolls
    # the router pods instead, so once the Deployment is ready every router serves the new routes, and versions
    # taken out of them can be deleted without a request still routed to them.
    rolled = {**scrape, ANN_ROUTES_DIGEST: hashlib.sha256(table.encode("utf-8")).hexdigest()}
    return [
        config,
        _deployment(base, ns, labels, {ANN_ENDPOINT: model}, serving.replicas, pod, rolled),
        _service(base, ns, labels, {ANN_ENDPOINT: model, **scrape}),
    ]


def _model_spec(uri: str, *, named: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelFormat": {"name": "mlflow"}, "storageUri": uri}
    # the CRD requires a container name under spec.canary[].predictor.model (not under spec.predictor.model)
    return {"name": "kserve-container", **spec} if named else spec


def inference_service(
    model: str, versions: Mapping[int, VersionServing], serving: KubernetesServing, *, canary: int | None = None
) -> dict[str, Any]:
    """The endpoint's InferenceService: the stable version, and the canary the deployment mode allows.

    Refuses (``UsageError``) a canary in Standard mode on a KServe older than 0.20, which would
    silently send it every request.
    """
    check_weights(model, versions)
    stable, new = canary_of(versions, canary)
    mode = serving.deployment_mode
    if new is not None and mode == "Standard" and not serving.standard_canaries:
        raise UsageError(
            f"KServe {serving.kserve_version} in Standard mode ignores canaryTrafficPercent and has no spec.canary "
            f"(0.20+), so version {new} of {model} would take all traffic at once; use deployment_mode Knative, or "
            "upgrade KServe to 0.20+ and set serving.kubernetes.kserve_version"
        )
    if new is not None and versions[new].weight == 100:  # a promoted canary serves alone
        stable, new = new, None
    newest = new if new is not None else stable
    annotations = {
        DEPLOYMENT_MODE: mode,
        ANN_ENDPOINT: model,
        ANN_MODEL_URI: versions[newest].model_uri,
        ANN_VERSIONS: json.dumps(
            {
                str(v): {"weight": s.weight, "model_uri": s.model_uri, "evidence": s.evidence_digest}
                for v, s in sorted(versions.items())
                if v in (stable, new)
            },
            separators=(",", ":"),
            sort_keys=True,
        ),
    }
    if versions[newest].evidence_digest:
        annotations[ANN_EVIDENCE] = versions[newest].evidence_digest or ""
    if new is not None:
        annotations[ANN_CANARY] = str(new)
    replicas = {"minReplicas": serving.replicas, "maxReplicas": serving.replicas}
    predictor: dict[str, Any]
    spec: dict[str, Any]
    if mode == "Knative":
        # Knative: the spec is the newest revision; KServe keeps the previous one for the rest of the traffic
        predictor = {
            **replicas,
            "labels": {LABEL_VERSION: str(newest)},
            "model": _model_spec(storage_uri(serving, model, newest), named=False),
        }
        if new is not None:
            predictor["canaryTrafficPercent"] = versions[new].weight
        spec = {"predictor": predictor}
    else:
        predictor = {
            "name": f"v{stable}",
            **replicas,
            "labels": {LABEL_VERSION: str(stable)},
            "model": _model_spec(storage_uri(serving, model, stable), named=False),
        }
        spec = {"predictor": predictor}
        if new is not None:
            spec["canary"] = [
                {
                    "trafficPercent": versions[new].weight,
                    "predictor": {
                        "name": f"v{new}",
                        **replicas,
                        "labels": {LABEL_VERSION: str(new)},
                        "model": _model_spec(storage_uri(serving, model, new), named=True),
                    },
                }
            ]
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _meta(object_name(model), serving.namespace, _labels(model, newest), annotations),
        "spec": spec,
    }


def render(
    model: str,
    versions: Mapping[int, VersionServing],
    serving: KubernetesServing,
    *,
    form: Form,
    tracking_uri: str,
    canary: int | None = None,
    sample_rate: float = 0.1,
) -> list[dict[str, Any]]:
    """Every object that serves ``model``'s endpoint with ``versions``, in apply order (versions before the router)."""
    check_weights(model, versions)
    if form == "kserve":
        return [inference_service(model, versions, serving, canary=canary)]
    objects: list[dict[str, Any]] = []
    for version, served in sorted(versions.items()):
        objects += plain_version(model, version, served, serving, tracking_uri=tracking_uri)
    return objects + plain_router(model, versions, serving, sample_rate=sample_rate)
