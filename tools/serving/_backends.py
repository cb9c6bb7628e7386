"""Which backend serves an endpoint: the local one, or a Kubernetes one (plain or KServe), chosen per endpoint.

``ServingBackends(ctx)`` implements ``ServingBackend`` for every tool (deployment, monitoring,
promotion, ``up``/``down``) by handing each call to the backend that serves the endpoint named:

- on ``deploy``, the deployed version's own spec decides (``serving.target`` of the spec its
  training run logged, and ``serving.kubernetes``): ``local`` (or none) is the embedded backend,
  ``kubernetes`` and ``kserve`` the Kubernetes backend in that form;
- afterwards, ``serving/<endpoint>/backend.json``, written by that deploy, says which backend serves
  the endpoint and from which version's spec, so advance, rollback, status and promote reach the
  same backend. What is served (namespace, image, storage URI) is read again from that version's
  spec in the registry on every call, and the cluster from the operator's kubeconfig and context
  (``MLOPS_KUBECONFIG``, ``MLOPS_KUBE_CONTEXT``): the file holds no URL, credential or configuration,
  so editing it can change neither what serves nor where.

An endpoint with no record is local, as before. One endpoint is served by one backend: a version
whose spec names another target than the endpoint's is refused (stop the endpoint first).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlops_supervisor.policies import InvalidInputError, RunError
from mlops_supervisor.tools.core import ToolContext, context_egress, using_store, write_json_atomic
from mlops_supervisor.tools.serving._backend import STAGING_SUFFIX, ServingBackend
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._prometheus import PrometheusMetrics

if TYPE_CHECKING:
    from mlops_supervisor.tools._spec import KubernetesServing, PipelineSpec

__all__ = ["BACKEND_RECORD", "ServingBackends", "version_serving"]

BACKEND_RECORD = "backend.json"
KubeForm = Literal["kubernetes", "kserve"]


def version_serving(ctx: ToolContext, model: str, version: int) -> PipelineSpec | None:
    """The spec ``model`` ``version`` was trained from (its training run's ``spec.yaml``); None without one."""
    from mlops_supervisor.tools.registry import model_version, trained_from  # the registry imports serving

    with using_store(ctx.store_uri) as client:
        return trained_from(client, model_version(client, model, version))


def _no_prometheus(model: str) -> dict[str, dict[str, Any]]:
    """The metrics of an endpoint on a cluster when no Prometheus is configured: an error, never an empty window."""
    raise InvalidInputError(
        "prometheus_not_configured",
        f"the canary analysis of {model} (served on Kubernetes) reads the routers' metrics from Prometheus; "
        "set MLOPS_PROMETHEUS_URL to its HTTP API (http://HOST:9090)",
    )


class ServingBackends:
    """The serving backend of every endpoint of a workspace: local by default, Kubernetes where deployed there."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.tracking_uri = ctx.store_uri
        self.local = LocalBackend.for_workspace(ctx.workspace, self.tracking_uri)
        self.root = Path(ctx.workspace) / "serving"
        self._kube: dict[str, Any] = {}
        # a version's training spec is a logged artifact that never changes: read once per version, not per call
        self._specs: dict[tuple[str, int], PipelineSpec | None] = {}

    # --- the record ------------------------------------------------------------------------

    def record(self, endpoint: str) -> dict[str, Any] | None:
        """Where ``endpoint`` is served, as its deploy recorded it; None for a local (or unknown) endpoint."""
        path = self.root / endpoint / BACKEND_RECORD
        if not path.exists():
            return None
        try:
            found: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise RunError(f"{path} is not JSON ({exc}); restore it or stop the endpoint by hand") from exc
        if found.get("target") not in ("kubernetes", "kserve"):
            raise RunError(f"{path} names target {found.get('target')!r}; expected kubernetes or kserve")
        return found

    def target(self, endpoint: str) -> str:
        """``local``, ``kubernetes`` or ``kserve``: the backend serving ``endpoint`` now."""
        record = self.record(endpoint)
        return "local" if record is None else str(record["target"])

    def backend_for(self, endpoint: str) -> ServingBackend:
        """The backend that serves ``endpoint``: its recorded Kubernetes backend, else the local one."""
        record = self.record(endpoint)
        if record is None:
            return self.local
        backend: ServingBackend = self._kubernetes(endpoint, record)
        return backend

    def _kubernetes(self, endpoint: str, record: dict[str, Any]) -> Any:
        """The Kubernetes backend of ``record`` (built once per endpoint and record)."""
        from mlops_supervisor.tools.serving._kubernetes import KubernetesBackend
        from mlops_supervisor.tools.serving._manifests import model_label

        # The record says only which backend and which version's spec; what is served (image, storage URI,
        # namespace) is read again from that version's spec in the registry, and the cluster context from the
        # settings, so an edited record cannot change what serves or where.
        serving = self._recorded_serving(endpoint, record)
        key = json.dumps({"target": record["target"], "serving": serving.model_dump(mode="json")}, sort_keys=True)
        if key not in self._kube:
            ctx = self.ctx
            # the router pods' series carry the endpoint's DNS-safe name, as the pods' model label does
            metrics: Callable[[str], dict[str, dict[str, Any]]] = (
                PrometheusMetrics(ctx.prometheus_url, label_value=model_label, allowed=context_egress(ctx))
                if ctx.prometheus_url
                else _no_prometheus
            )
            self._kube[key] = KubernetesBackend.from_config(
                form=record["target"],
                serving=serving,
                tracking_uri=self.tracking_uri,
                kubeconfig=ctx.kubeconfig,
                context=ctx.kube_context,
                metrics=metrics,
            )
        return self._kube[key]

    def _recorded_serving(self, endpoint: str, record: dict[str, Any]) -> KubernetesServing:
        """The ``serving.kubernetes`` section of the spec the endpoint's recorded version was trained from."""
        model = endpoint.removesuffix(STAGING_SUFFIX)
        version = record.get("deployed_from_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RunError(
                f"{self.root / endpoint / BACKEND_RECORD} names no version ({version!r}); restore it or stop the "
                "endpoint on the cluster by hand"
            )
        if (model, version) not in self._specs:
            self._specs[model, version] = version_serving(self.ctx, model, version)
        spec = self._specs[model, version]
        serving = spec.serving if spec is not None else None
        if serving is None or serving.target != record["target"] or serving.kubernetes is None:
            raise RunError(
                f"{self.root / endpoint / BACKEND_RECORD} says {model} is served on {record['target']} from version "
                f"{version}'s spec, which says otherwise; restore the file or stop the endpoint on the cluster by hand"
            )
        return serving.kubernetes

    def _write_record(self, endpoint: str, form: KubeForm, serving: KubernetesServing, version: int) -> dict[str, Any]:
        record = {  # shown by status; only target and version are read back (``_recorded_serving``)
            "target": form,
            "namespace": serving.namespace,
            "deployed_from_version": version,
        }
        write_json_atomic(self.root / endpoint / BACKEND_RECORD, record)
        return record

    def _deploy_target(self, endpoint: str, version: int) -> tuple[str, KubernetesServing | None]:
        """The target (and Kubernetes section) of the spec ``version`` of ``endpoint``'s model was trained from."""
        model = endpoint.removesuffix(STAGING_SUFFIX)
        spec = version_serving(self.ctx, model, version)
        serving = spec.serving if spec is not None else None
        wanted = (serving.target if serving is not None else None) or "local"
        kube = getattr(serving, "kubernetes", None)
        if wanted == "local":
            return wanted, None
        if kube is None:
            raise InvalidInputError(
                "kubernetes_serving_missing",
                f"{model} version {version} was trained from a spec with serving.target {wanted} but no "
                "serving.kubernetes section (namespace, image, storage_uri); add it and train again",
            )
        if self.ctx.prometheus_url is None:
            raise InvalidInputError(
                "prometheus_not_configured",
                f"{model} version {version} is to be served on {wanted}, whose canary analysis reads the routers' "
                "metrics from Prometheus; set MLOPS_PROMETHEUS_URL to its HTTP API (http://HOST:9090)",
            )
        return wanted, kube

    # --- the protocol ----------------------------------------------------------------------

    def deploy(
        self, model: str, version: int, model_uri: str, *, weight: int, evidence_digest: str | None = None
    ) -> dict[str, Any]:
        """Deploy ``version`` to the backend its spec names; an endpoint served elsewhere is refused."""
        wanted, kube = self._deploy_target(model, version)
        now = self.target(model)
        serving_now = self.status(model) if now == "local" else None
        in_use = now != "local" or bool(serving_now and (serving_now["versions"] or serving_now["router"]))
        if in_use and wanted != now:
            raise InvalidInputError(
                "serving_target_changed",
                f"{model} is served by the {now} backend, but version {version} was trained from a spec with "
                f"serving.target {wanted}; one endpoint has one backend: stop it (`mlops-supervisor down {model}`) "
                "before deploying there, or train from a spec with the same target",
            )
        if wanted == "local":
            return self.local.deploy(model, version, model_uri, weight=weight, evidence_digest=evidence_digest)
        assert kube is not None and wanted in ("kubernetes", "kserve")
        form: KubeForm = "kserve" if wanted == "kserve" else "kubernetes"
        # recorded first: an apply that fails half-way leaves an endpoint status and stop can still reach
        record = self.record(model)
        if record is None:
            record = self._write_record(model, form, kube, version)
        elif self._recorded_serving(model, record) != kube:
            raise InvalidInputError(
                "serving_spec_changed",
                f"{model} is served on {now} as version {record.get('deployed_from_version')}'s spec says "
                f"(serving.kubernetes); version {version} was trained from a spec with another serving.kubernetes "
                f"section; one endpoint keeps one configuration: stop it (`mlops-supervisor down {model}`) first, or "
                "train from a spec with the same section",
            )
        result: dict[str, Any] = self._kubernetes(model, record).deploy(
            model, version, model_uri, weight=weight, evidence_digest=evidence_digest
        )
        return result

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        """Split ``model``'s traffic on the backend that serves it."""
        return self.backend_for(model).set_weights(model, weights)

    def status(self, model: str) -> dict[str, Any]:
        """``model``'s versions, weights and health on the backend that serves it, with that backend's name."""
        return {**self.backend_for(model).status(model), "backend": self.target(model)}

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        """All traffic to ``to_version`` on the backend that serves ``model``."""
        return self.backend_for(model).rollback(model, to_version)

    def stop(self, model: str) -> dict[str, Any]:
        """Stop ``model``'s endpoint where it runs; a Kubernetes endpoint's record goes once its objects are gone."""
        result = self.backend_for(model).stop(model)
        (self.root / model / BACKEND_RECORD).unlink(missing_ok=True)
        return result

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        """Per-version cumulative requests, errors and latency buckets: the router's, or Prometheus' for a cluster."""
        return self.backend_for(model).read_metrics(model)

    # --- the endpoint operations (up, down) ------------------------------------------------

    def restore(self, model: str) -> dict[str, Any]:
        """Restart what died of a local endpoint; a cluster's own controllers restart pods, so only its status."""
        if self.record(model) is None:
            return self.local.restore(model)
        return {**self.status(model), "restarted": []}

    def models(self) -> list[str]:
        """Every endpoint of this workspace: local ones with serving state, and those deployed to a cluster."""
        recorded = {p.parent.name for p in self.root.glob(f"*/{BACKEND_RECORD}")} if self.root.exists() else set()
        return sorted(set(self.local.models()) | recorded)

    def down(self) -> list[dict[str, Any]]:
        """Stop every endpoint of this workspace, wherever it runs."""
        return [self.stop(model) for model in self.models()]
