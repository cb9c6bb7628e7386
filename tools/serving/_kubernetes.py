"""The Kubernetes serving backend: the ``ServingBackend`` protocol against a cluster, plain or KServe.

The cluster is the state of record: ``status`` reads the objects (ready replicas, conditions,
KServe's traffic and canary statuses), weights live in the router's ConfigMap (plain form) or
in the InferenceService (``canaryTrafficPercent`` or ``spec.canary``), and every object carries
the model, version, model URI and gate evidence (``_manifests``). Each write is a server-side
apply under our own field manager. A rollout is waited for with a watch bounded by
``ready_timeout_s``; one that is not ready in time is undone and reported. Every API failure
becomes one ``RunError`` (or ``UsageError`` for a configuration problem) that names the object
and what to check, and a write that fails half-way undoes what the call applied (or lists what
is left when the undo fails too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from mlops_supervisor.policies import InvalidInputError, RunError, UsageError
from mlops_supervisor.tools._spec import KubernetesServing
from mlops_supervisor.tools.serving._manifests import (
    ANN_CANARY,
    ANN_ENDPOINT,
    ANN_EVIDENCE,
    ANN_MODEL_URI,
    ANN_VERSIONS,
    LABEL_MODEL,
    LABEL_ROLE,
    LABEL_VERSION,
    MANAGED_BY,
    VersionServing,
    model_label,
    object_name,
    plain_router,
    plain_version,
    render,
    router_url,
    selector,
    version_name,
)

__all__ = ["RBAC_FILE", "KubernetesBackend"]

Form = Literal["kubernetes", "kserve"]
APPLY = "application/apply-patch+yaml"
RBAC_FILE = "deploy/kubernetes/rbac.yaml"
DEFAULT_KUBECONFIG = Path("~/.kube/config")  # kubectl's, when neither MLOPS_KUBECONFIG nor KUBECONFIG names one
KSERVE = ("serving.kserve.io", "v1beta1", "inferenceservices")
_SNAKE = {"Deployment": "deployment", "Service": "service", "ConfigMap": "config_map"}
_SERVER_FIELDS = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")


def _ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj["kind"]), str(obj["metadata"]["name"])


def _condition(obj: Mapping[str, Any], kind: str) -> bool | None:
    """The ``kind`` condition of ``obj``'s status: True, False, or None when it is not reported."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return bool(cond.get("status") == "True")
    return None


def _observed(obj: Mapping[str, Any]) -> bool:
    """Whether the controller has seen ``obj``'s latest spec (status.observedGeneration caught up)."""
    status = obj.get("status") or {}
    return int(status.get("observedGeneration") or 0) >= int(obj["metadata"].get("generation") or 0)


def _deployment_ready(obj: Mapping[str, Any]) -> bool:
    status, wanted = obj.get("status") or {}, int(obj["spec"].get("replicas", 1))
    updated = status.get("updatedReplicas", wanted) if "updatedReplicas" in status else wanted
    return _observed(obj) and int(status.get("readyReplicas") or 0) >= wanted and int(updated) >= wanted


def _isvc_ready(obj: Mapping[str, Any]) -> bool:
    ready = _observed(obj) and _condition(obj, "Ready") is True
    if obj["spec"].get("canary"):
        return ready and _condition(obj, "CanaryPredictorReady") is True
    return ready


def _timed_out(exc: BaseException) -> bool:
    """Whether a urllib3 failure is a timeout (a refused connection is not, though urllib3 files it under one)."""
    cause = getattr(exc, "reason", None) or exc
    refused = isinstance(cause, urllib3.exceptions.NewConnectionError)
    return isinstance(cause, urllib3.exceptions.TimeoutError) and not refused


def _as_applied(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A stored object as it can be applied again: without its status and the fields the server owns."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in _SERVER_FIELDS}
    return out


class _NotReady(Exception):
    """A workload that did not become ready in time; ``detail`` says what its status showed last."""

    def __init__(self, kind: str, name: str, detail: str) -> None:
        super().__init__(f"{kind} {name}: {detail}")
        self.kind, self.name, self.detail = kind, name, detail


class _RawWatch(watch.Watch):
    """A watch that yields plain dicts: client 37's models refuse partial objects."""

    def get_return_type(self, func: Any) -> None:
        return None


class KubernetesBackend:
    """Serving on a Kubernetes cluster: a router and a Deployment per version, or a KServe InferenceService."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        form: Form,
        serving: KubernetesServing,
        tracking_uri: str,
        metrics: Callable[[str], dict[str, dict[str, Any]]] | None = None,
        field_manager: str = "mlops-supervisor",
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 30.0,
    ) -> None:
        if form not in ("kubernetes", "kserve"):
            raise UsageError(f"Kubernetes serving form {form!r} is unknown; use kubernetes or kserve")
        self.api = api_client
        self.form: Form = form
        self.serving = serving
        self.namespace = serving.namespace
        self.tracking_uri = tracking_uri
        self.metrics = metrics
        self.field_manager = field_manager
        self.clock = clock
        self.request_timeout = request_timeout
        self.server = str(api_client.configuration.host)
        self.host = urlsplit(self.server).hostname or ""
        """The API server's host name, for the egress allow-list."""
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_config(
        cls,
        *,
        form: Form,
        serving: KubernetesServing,
        tracking_uri: str,
        kubeconfig: Path | None = None,
        context: str | None = None,
        metrics: Callable[[str], dict[str, dict[str, Any]]] | None = None,
    ) -> KubernetesBackend:
        """The backend on the cluster of ``kubeconfig`` (and ``context``), else of ``~/.kube/config`` when there is
        one (kubectl's default), else of the pod's in-cluster service account."""
        if kubeconfig is None and DEFAULT_KUBECONFIG.expanduser().is_file():
            kubeconfig = DEFAULT_KUBECONFIG.expanduser()
        try:
            if kubeconfig is not None:
                api = config.new_client_from_config(config_file=str(kubeconfig), context=context)  # type: ignore[no-untyped-call]
            else:
                cfg = client.Configuration()
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
                api = client.ApiClient(cfg)
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            where = f"kubeconfig {kubeconfig}" + (f" (context {context})" if context else "")
            raise UsageError(
                f"cannot load the Kubernetes configuration from {where if kubeconfig else 'the in-cluster service account'}: "
                f"{exc}; name a kubeconfig (MLOPS_KUBECONFIG or KUBECONFIG), put one at {DEFAULT_KUBECONFIG}, or run "
                "inside a pod with a service account"
            ) from None
        return cls(api, form=form, serving=serving, tracking_uri=tracking_uri, metrics=metrics)

    # --- API calls: each failure becomes one message naming the object ----------------------

    def _fail(self, exc: BaseException, action: str, kind: str, name: str) -> NoReturn:
        what = f"{action} {kind} {self.namespace}/{name} on {self.server}"
        if isinstance(exc, ApiException):
            try:
                body = json.loads(exc.body or "{}")
            except ValueError:
                body = {}
            said = body.get("message") or exc.reason or ""
            status = int(exc.status or 0)
            if status == 401:
                raise UsageError(
                    f"{what}: unauthorized (401): the API server refused the credentials; check the kubeconfig "
                    "(its user and context) or the service account token"
                ) from None
            if status == 403:
                raise UsageError(
                    f"{what}: forbidden (403): {said}; the account needs the Role in {RBAC_FILE} bound in "
                    f"namespace {self.namespace}"
                ) from None
            if status == 404:
                extra = (
                    " and that KServe is installed (kubectl get crd inferenceservices.serving.kserve.io)"
                    if kind == "InferenceService"
                    else ""
                )
                raise UsageError(
                    f"{what}: not found (404): {said}; check that namespace {self.namespace} exists{extra}"
                ) from None
            if status == 409:
                raise RunError(
                    f"{what}: conflict (409): {said}; another field manager owns fields of it, or it changed "
                    f"meanwhile (kubectl get {kind.lower()} {name} -n {self.namespace} --show-managed-fields -o yaml)"
                ) from None
            if status == 422:
                causes = (body.get("details") or {}).get("causes") or []
                fields = "; ".join(f"{c.get('field', '?')}: {c.get('message', '')}" for c in causes)
                raise RunError(f"{what}: invalid (422): {fields or said}; fix that field of the manifest") from None
            raise RunError(f"{what}: the API server answered {status} {exc.reason}: {said}") from None
        reason = getattr(exc, "reason", None)
        if _timed_out(exc):
            raise RunError(
                f"{what}: no answer within {self.request_timeout:g} s; check the API server address and the network"
            ) from None
        raise RunError(
            f"{what}: cannot reach the API server ({reason or exc}); check the kubeconfig's server address "
            "and that the cluster runs"
        ) from None

    def _call(self, action: str, kind: str, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.request_timeout, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            self._fail(exc, action, kind, name)
        return json.loads(response.data or b"{}")

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None when there is none."""
        try:
            if kind == "InferenceService":
                return self._raw(self.custom.get_namespaced_custom_object, *KSERVE[:2], self.namespace, KSERVE[2], name)
            return self._raw(
                getattr(self.core if kind != "Deployment" else self.apps, f"read_namespaced_{_SNAKE[kind]}"),
                name,
                self.namespace,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            self._fail(exc, "read", kind, name)
        except urllib3.exceptions.HTTPError as exc:
            self._fail(exc, "read", kind, name)

    def _raw(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(
            fn(*args, _preload_content=False, _request_timeout=self.request_timeout).data
        )
        return found

    def _list(self, kind: str, model: str) -> list[dict[str, Any]]:
        """``model``'s objects of ``kind``, by label (filtered here too: a selector is only a hint to some servers)."""
        label = selector(model)
        if kind == "InferenceService":
            found = self._call(
                "list",
                kind,
                "*",
                self.custom.list_namespaced_custom_object,
                *KSERVE[:2],
                self.namespace,
                KSERVE[2],
                label_selector=label,
            )
        else:
            api = self.apps if kind == "Deployment" else self.core
            found = self._call(
                "list", kind, "*", getattr(api, f"list_namespaced_{_SNAKE[kind]}"), self.namespace, label_selector=label
            )
        wanted = {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_MODEL: model_label(model)}
        return [
            {"kind": kind, **item}
            for item in found.get("items") or []
            if wanted.items() <= ((item.get("metadata") or {}).get("labels") or {}).items()
            and (item["metadata"].get("annotations") or {}).get(ANN_ENDPOINT, model) == model
        ]

    def _apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` under our field manager, taking over fields others set (force)."""
        kind, name = _ref(obj)
        body = dict(obj)
        options = {"field_manager": self.field_manager, "force": True, "_content_type": APPLY}
        if kind == "InferenceService":
            # client 37 returns None for a 201 here (its response map lists only 200): read the raw body
            return dict(
                self._call(
                    "apply",
                    kind,
                    name,
                    self.custom.patch_namespaced_custom_object,
                    *KSERVE[:2],
                    self.namespace,
                    KSERVE[2],
                    name,
                    body,
                    **options,
                )
            )
        api = self.apps if kind == "Deployment" else self.core
        return dict(
            self._call(
                "apply",
                kind,
                name,
                getattr(api, f"patch_namespaced_{_SNAKE[kind]}"),
                name,
                self.namespace,
                body,
                **options,
            )
        )

    def _delete(self, kind: str, name: str) -> bool:
        """Delete one object; whether it was there."""
        try:
            if kind == "InferenceService":
                self.custom.delete_namespaced_custom_object(
                    *KSERVE[:2],
                    self.namespace,
                    KSERVE[2],
                    name,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            else:
                api = self.apps if kind == "Deployment" else self.core
                getattr(api, f"delete_namespaced_{_SNAKE[kind]}")(
                    name,
                    self.namespace,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
        except ApiException as exc:
            if exc.status == 404:
                return False
            self._fail(exc, "delete", kind, name)
        except urllib3.exceptions.HTTPError as exc:
            self._fail(exc, "delete", kind, name)
        return True

    # --- applying a set of objects, all or nothing --------------------------------------------

    @contextmanager
    def _undoable(self, *, undo_not_ready: bool = True) -> Iterator[Callable[[Mapping[str, Any]], dict[str, Any]]]:
        """Apply objects one by one; if anything in the block fails, put back what it applied, newest first.

        The error that stopped it is raised again with what was undone, or with what is left
        when the undo fails too. ``undo_not_ready=False`` (a rollback) keeps what was applied when
        a workload is merely slow to become ready: undoing it would put traffic back on the version
        being rolled back.
        """
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

        def apply(obj: Mapping[str, Any]) -> dict[str, Any]:
            kind, name = _ref(obj)
            before = self._get(kind, name)
            applied = self._apply(obj)
            done.append((dict(obj), before))
            return applied

        try:
            yield apply
        except (RunError, UsageError, _NotReady) as exc:
            if isinstance(exc, _NotReady) and not undo_not_ready:
                applied = ", ".join(f"{_ref(obj)[0]} {_ref(obj)[1]}" for obj, _ in done)
                raise RunError(
                    f"{exc.kind} {self.namespace}/{exc.name} is not ready: {exc.detail}; what was applied stays "
                    f"({applied}): a rollback is never undone"
                ) from None
            undone, left = self._undo(done)
            note = ""
            if undone:
                note += f"; undone: {', '.join(undone)}"
            if left:
                note += f"; NOT undone, left as applied: {'; '.join(left)}"
            if isinstance(exc, _NotReady):
                raise RunError(
                    f"the rollout of {exc.kind} {self.namespace}/{exc.name} was rolled back: {exc.detail}{note}"
                ) from None
            if isinstance(exc, InvalidInputError):
                raise InvalidInputError(exc.reason_code, f"{exc}{note}") from None
            raise type(exc)(f"{exc}{note}") from None

    def _undo(self, done: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> tuple[list[str], list[str]]:
        undone, left = [], []
        for obj, before in reversed(done):
            kind, name = _ref(obj)
            try:
                if before is None:
                    self._delete(kind, name)
                    undone.append(f"deleted {kind} {name}")
                else:
                    self._apply({**_as_applied(before), "apiVersion": obj["apiVersion"], "kind": kind})
                    undone.append(f"restored {kind} {name}")
            except (RunError, UsageError) as exc:
                left.append(f"{kind} {self.namespace}/{name} ({exc})")
        return undone, left

    # --- readiness -----------------------------------------------------------------------------

    def _wait_ready(self, kind: str, name: str) -> dict[str, Any]:
        """Wait (a watch, bounded by ``ready_timeout_s``) until the workload is ready; ``_NotReady`` when it is not."""
        ready = _isvc_ready if kind == "InferenceService" else _deployment_ready
        deadline = self.clock() + self.serving.ready_timeout_s
        last = self._get(kind, name)
        if last is None:
            raise _NotReady(kind, name, "it is gone")
        if ready(last):
            return last
        if kind == "InferenceService":
            lister: Callable[..., Any] = self.custom.list_namespaced_custom_object
            args: tuple[Any, ...] = (*KSERVE[:2], self.namespace, KSERVE[2])
        else:
            lister, args = self.apps.list_namespaced_deployment, (self.namespace,)
        while (left := deadline - self.clock()) > 0:
            stream = _RawWatch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    lister,
                    *args,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=max(1, int(left)),
                    _request_timeout=left,
                    deserialize=False,
                ):
                    obj = event.get("object") or {}
                    if (obj.get("metadata") or {}).get("name") != name:
                        continue  # a server may ignore the field selector
                    if event.get("type") == "DELETED":
                        raise _NotReady(kind, name, "it was deleted while starting")
                    last = {"kind": kind, **obj}
                    if ready(last):
                        stream.stop()  # type: ignore[no-untyped-call]
                        return last
                    if self.clock() >= deadline:
                        break
            except ApiException as exc:
                self._fail(exc, "watch", kind, name)
            except urllib3.exceptions.HTTPError as exc:
                if not _timed_out(exc):
                    self._fail(exc, "watch", kind, name)
        raise _NotReady(kind, name, f"not ready after {self.serving.ready_timeout_s:g} s; {self._describe(last)}")

    def _describe(self, obj: Mapping[str, Any]) -> str:
        status = obj.get("status") or {}
        conditions = [
            f"{c.get('type')}={c.get('status')}" + (f" ({c['message']})" if c.get("message") else "")
            for c in status.get("conditions") or []
        ]
        shown = f"conditions {', '.join(conditions)}" if conditions else "no conditions reported"
        if obj.get("kind") == "Deployment":
            shown = f"{status.get('readyReplicas') or 0}/{obj['spec'].get('replicas', 1)} replicas ready, {shown}"
        hint = (
            "check the InferenceService's events and the predictor pods, and that the model's storageUri holds it"
            if obj.get("kind") == "InferenceService"
            else "check its events and pods (kubectl describe), the image pull and the model server's log"
        )
        return f"{shown}; {hint}"

    def _rollout(
        self, *steps: list[dict[str, Any]], check: Callable[[], None] | None = None, undo_not_ready: bool = True
    ) -> None:
        """Apply each step's objects and wait for its workloads before the next step; then ``check``.

        When anything fails or is not ready in time, everything this call applied is undone
        and a ``RunError`` says so (a rollback, ``undo_not_ready=False``, keeps what it applied
        when a workload is only slow).
        """
        with self._undoable(undo_not_ready=undo_not_ready) as apply:
            for objects in steps:
                for obj in objects:
                    apply(obj)
                for obj in objects:
                    if obj["kind"] in ("Deployment", "InferenceService"):
                        self._wait_ready(*_ref(obj))
            if check is not None:
                check()

    # --- current state -------------------------------------------------------------------------

    def _plain_versions(self, model: str) -> tuple[dict[int, VersionServing], dict[int, dict[str, Any]]]:
        """The routed versions (weights from the router's ConfigMap) and every version Deployment by number."""
        deployments = {
            int(d["metadata"]["labels"][LABEL_VERSION]): d
            for d in self._list("Deployment", model)
            if d["metadata"]["labels"].get(LABEL_ROLE) == "model" and LABEL_VERSION in d["metadata"]["labels"]
        }
        config_map = self._get("ConfigMap", f"{object_name(model)}-routes")
        routes = json.loads((config_map or {}).get("data", {}).get("routes.json", "{}")).get("versions", {})
        versions = {}
        for key, route in routes.items():
            found = deployments.get(int(key))
            annotations = (found or {}).get("metadata", {}).get("annotations") or {}
            versions[int(key)] = VersionServing(
                int(route["weight"]), annotations.get(ANN_MODEL_URI, ""), annotations.get(ANN_EVIDENCE)
            )
        return versions, deployments

    def _isvc_versions(self, isvc: Mapping[str, Any] | None) -> dict[int, VersionServing]:
        if isvc is None:
            return {}
        recorded = json.loads((isvc["metadata"].get("annotations") or {}).get(ANN_VERSIONS, "{}"))
        return {
            int(v): VersionServing(int(s["weight"]), s["model_uri"], s.get("evidence")) for v, s in recorded.items()
        }

    def _current(self, model: str) -> dict[int, VersionServing]:
        if self.form == "kserve":
            return self._isvc_versions(self._get("InferenceService", object_name(model)))
        return self._plain_versions(model)[0]

    def render(
        self,
        model: str,
        weights: dict[int, int],
        model_uris: dict[int, str],
        evidence: dict[int, str],
        *,
        canary: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every object that would serve ``model`` with ``weights`` (what ``deploy --dry-run`` prints)."""
        versions = {v: VersionServing(w, model_uris[v], evidence.get(v)) for v, w in weights.items()}
        return render(model, versions, self.serving, form=self.form, tracking_uri=self.tracking_uri, canary=canary)

    # --- the protocol ----------------------------------------------------------------------------

    def deploy(
        self, model: str, version: int, model_uri: str, *, weight: int, evidence_digest: str | None = None
    ) -> dict[str, Any]:
        """Roll ``version`` out, wait until it is ready, then give it ``weight`` and the rest to the others by share.

        A rollout that is not ready within ``ready_timeout_s`` is undone (``RunError``), and the
        traffic never moved.
        """
        if not 0 < weight <= 100:
            raise InvalidInputError("invalid_weights", f"weight {weight} of version {version} must be 1..100")
        others = {v: s for v, s in self._current(model).items() if v != version}
        if self.form == "kserve":  # KServe serves a stable and a canary: a version without traffic is not kept
            others = {v: s for v, s in others.items() if s.weight > 0}
        total = sum(s.weight for s in others.values())
        weights = {v: round(s.weight * (100 - weight) / total) if total else 0 for v, s in others.items()}
        weights[version] = weight if total else 100
        if drift := 100 - sum(weights.values()):  # rounding: the largest other share absorbs it
            weights[max(others, key=lambda v: weights[v])] += drift
        versions = {v: VersionServing(weights[v], s.model_uri, s.evidence_digest) for v, s in others.items()}
        versions[version] = VersionServing(weights[version], model_uri, evidence_digest)
        if self.form == "kserve":
            self._rollout_isvc(model, versions, canary=version if len(versions) > 1 else None)
        else:
            # the version first, and only once it is ready the routes that give it traffic
            self._rollout(
                plain_version(model, version, versions[version], self.serving, tracking_uri=self.tracking_uri),
                plain_router(model, versions, self.serving),
            )
        return self.status(model)

    def _rollout_isvc(
        self, model: str, versions: dict[int, VersionServing], *, canary: int | None, undo_not_ready: bool = True
    ) -> None:
        (isvc,) = render(model, versions, self.serving, form="kserve", tracking_uri=self.tracking_uri, canary=canary)
        name = isvc["metadata"]["name"]

        def canary_kept() -> None:
            # a KServe older than 0.20 prunes spec.canary silently: read it back before claiming a canary
            back = self._get("InferenceService", name) or {}
            if isvc["spec"].get("canary") and not (back.get("spec") or {}).get("canary"):
                raise UsageError(
                    f"InferenceService {self.namespace}/{name} lost spec.canary when applied: the cluster's KServe "
                    "is older than 0.20, whose Standard mode cannot split traffic; use deployment_mode Knative or "
                    "upgrade KServe (and set serving.kubernetes.kserve_version)"
                )

        self._rollout([isvc], check=canary_kept, undo_not_ready=undo_not_ready)

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        """Split traffic between running versions; weights must name deployed versions and sum to 100."""
        current = self._current(model)
        unknown = sorted(v for v in weights if v not in current)
        if unknown or sum(weights.values()) != 100 or any(w < 0 for w in weights.values()):
            raise InvalidInputError(
                "invalid_weights",
                f"weights {weights} must name deployed versions of {model} "
                f"({', '.join(map(str, sorted(current))) or 'none'}) and sum to 100",
            )
        versions = {v: VersionServing(weights.get(v, 0), s.model_uri, s.evidence_digest) for v, s in current.items()}
        if self.form == "kserve":
            isvc = self._get("InferenceService", object_name(model)) or {}
            canary = (isvc.get("metadata", {}).get("annotations") or {}).get(ANN_CANARY)
            self._rollout_isvc(model, versions, canary=int(canary) if canary else None)
        else:
            self._rollout(plain_router(model, versions, self.serving))
        return self.status(model)

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        """All traffic to ``to_version`` first, then every other version removed."""
        current = self._current(model)
        found = current.get(to_version)
        if found is None or not self.status(model)["versions"].get(to_version, {}).get("alive"):
            raise RunError(
                f"version {to_version} of {model} is not running in namespace {self.namespace}; cannot roll back to it"
            )
        alone = {to_version: VersionServing(100, found.model_uri, found.evidence_digest)}
        if self.form == "kserve":
            self._rollout_isvc(model, alone, canary=None, undo_not_ready=False)
            return self.status(model)
        self._rollout(plain_router(model, alone, self.serving), undo_not_ready=False)
        failed = []
        for version in [v for v in self._plain_versions(model)[1] if v != to_version]:
            for kind in ("Deployment", "Service"):
                try:
                    self._delete(kind, version_name(model, version))
                except (RunError, UsageError) as exc:
                    failed.append(str(exc))
        if failed:
            raise RunError(
                f"all traffic of {model} is on version {to_version}, but removing the others failed: {'; '.join(failed)}"
            )
        return self.status(model)

    def stop(self, model: str) -> dict[str, Any]:
        """Delete every object of ``model``'s endpoint; what would not go is listed."""
        kinds = ("InferenceService",) if self.form == "kserve" else ("Deployment", "Service", "ConfigMap")
        deleted, failed = [], []
        for kind in kinds:
            for obj in self._list(kind, model):
                name = obj["metadata"]["name"]
                try:
                    if self._delete(kind, name):
                        deleted.append(f"{kind}/{name}")
                except (RunError, UsageError) as exc:
                    failed.append(str(exc))
        if failed:
            raise RunError(
                f"stopping {model} deleted {', '.join(deleted) or 'nothing'}; still there: {'; '.join(failed)}"
            )
        return {"model": model, "stopped": len(deleted), "already_dead": 0, "deleted": deleted}

    def scale(self, model: str, version: int, replicas: int) -> dict[str, Any]:
        """Run ``replicas`` pods of ``version`` (KServe: of the whole InferenceService), and wait for them."""
        if not 1 <= replicas <= 100:
            raise InvalidInputError("invalid_replicas", f"replicas {replicas} must be 1..100")
        current = self._current(model)
        if version not in current:
            raise InvalidInputError(
                "unknown_version", f"version {version} of {model} is not deployed; deployed: {sorted(current)}"
            )
        serving = self.serving.model_copy(update={"replicas": replicas})
        if self.form == "kserve":
            isvc = self._get("InferenceService", object_name(model)) or {}
            canary = (isvc.get("metadata", {}).get("annotations") or {}).get(ANN_CANARY)
            (obj,) = render(
                model,
                current,
                serving,
                form="kserve",
                tracking_uri=self.tracking_uri,
                canary=int(canary) if canary else None,
            )
            self._rollout([obj])
        else:
            self._rollout(plain_version(model, version, current[version], serving, tracking_uri=self.tracking_uri)[:1])
        return self.status(model)

    def status(self, model: str) -> dict[str, Any]:
        """The endpoint as the cluster shows it: versions with weight, readiness and model URI, the router, conditions."""
        base = {"model": model, "form": self.form, "namespace": self.namespace}
        if self.form == "kserve":
            return {**base, **self._isvc_status(model)}
        versions, deployments = self._plain_versions(model)
        router = self._get("Deployment", object_name(model))
        out: dict[int, dict[str, Any]] = {}
        for v, s in sorted(versions.items()):
            d = deployments.get(v)
            ready = int(((d or {}).get("status") or {}).get("readyReplicas") or 0)
            out[v] = {
                "weight": s.weight,
                "alive": ready > 0,
                "model_uri": s.model_uri,
                "evidence_digest": s.evidence_digest,
                "ready_replicas": ready,
                "replicas": int((d or {}).get("spec", {}).get("replicas") or 0),
                "name": version_name(model, v),
            }
        router_ready = int(((router or {}).get("status") or {}).get("readyReplicas") or 0)
        return {
            **base,
            "router": None
            if router is None
            else {
                "url": router_url(model, self.namespace),
                "alive": router_ready > 0,
                "ready_replicas": router_ready,
                "name": object_name(model),
            },
            "versions": out,
            "stray": [  # the local backend's shape (a process record); a Deployment has no pid
                {"kind": "Deployment", "name": d["metadata"]["name"], "pid": None}
                for v, d in sorted(deployments.items())
                if v not in versions
            ],
            "conditions": ((router or {}).get("status") or {}).get("conditions") or [],
        }

    def _isvc_status(self, model: str) -> dict[str, Any]:
        isvc = self._get("InferenceService", object_name(model))
        if isvc is None:
            return {"router": None, "versions": {}, "stray": [], "conditions": []}
        status = isvc.get("status") or {}
        annotations = isvc["metadata"].get("annotations") or {}
        canary = int(annotations[ANN_CANARY]) if annotations.get(ANN_CANARY) else None
        ready = _condition(isvc, "Ready") is True
        stable_ok = ready or _condition(isvc, "PredictorReady") is True
        if isvc["spec"].get("canary"):
            canary_ok = _condition(isvc, "CanaryPredictorReady") is True
        else:
            canary_ok = ready and _condition(isvc, "LatestDeploymentReady") is not False
        out = {}
        for v, s in sorted(self._isvc_versions(isvc).items()):
            out[v] = {
                "weight": s.weight,
                "alive": canary_ok if v == canary else stable_ok,
                "model_uri": s.model_uri,
                "evidence_digest": s.evidence_digest,
                "ready_replicas": None,
                "role": "canary" if v == canary else "stable",
            }
        return {
            "router": {"url": status.get("url"), "alive": ready, "name": isvc["metadata"]["name"]},
            "versions": out,
            "stray": [],
            "conditions": status.get("conditions") or [],
            "traffic": ((status.get("components") or {}).get("predictor") or {}).get("traffic") or [],
            "canary_statuses": status.get("canaryStatuses") or [],
        }

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        """Per-version request counts, errors and latency buckets from the configured reader (Prometheus).

        Without one it is an error, never an empty window: a canary must not be judged on no evidence.
        """
        if self.metrics is None:
            raise RunError(
                f"no metrics reader for {model} on Kubernetes: its canary analysis reads Prometheus; set "
                "MLOPS_PROMETHEUS_URL (or pass metrics= to KubernetesBackend)"
            )
        return self.metrics(model)

    def models(self) -> list[str]:
        """The endpoints this project serves in the namespace (their exact names, from the annotations)."""
        wanted = f"app.kubernetes.io/managed-by={MANAGED_BY}"
        if self.form == "kserve":
            found = self._call(
                "list",
                "InferenceService",
                "*",
                self.custom.list_namespaced_custom_object,
                *KSERVE[:2],
                self.namespace,
                KSERVE[2],
                label_selector=wanted,
            )
        else:
            found = self._call(
                "list", "Deployment", "*", self.apps.list_namespaced_deployment, self.namespace, label_selector=wanted
            )
        names = set()
        for item in found.get("items") or []:
            meta = item.get("metadata") or {}
            if (meta.get("labels") or {}).get("app.kubernetes.io/managed-by") == MANAGED_BY:
                names.add((meta.get("annotations") or {}).get(ANN_ENDPOINT) or meta.get("name"))
        return sorted(n for n in names if n)
