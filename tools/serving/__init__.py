"""Serving: the backend protocol, the local backend, the model server, the router, the deployment tools.

- ``_backend``: the protocol every serving backend implements, and the name of a model's staging
  endpoint (``MODEL@staging``: its own router and URL, beside the production endpoint ``MODEL``).
- ``_local``: the embedded backend, its state (``<workspace>/serving/<endpoint>/state.json`` and the
  ``routes.json`` the router reads) and the protocol's operations over it.
- ``_processes``: the local backend's server processes: spawn one, recorded under ``procs/``, and
  wait for its /health; read the records; check a pid is alive (zombies and reused pids are not);
  end one.
- ``_model_server``: the HTTP server of one model version.
- ``_router``: the weighted HTTP/1.1 proxy in front of the versions; it gives each request an id,
  logs every prediction and takes labels that arrive later (``POST /feedback``).
- ``_predictions``: the prediction log the router writes (one line per record answered) and its reader.
- ``_feedback``: labels that arrive later: the feedback contract each deploy writes, the checks a
  batch of labels passes whole or not at all, the stored batches and their reader, and the data
  agent's ``record_feedback`` tool.
- ``_main``: the entry point those server processes run (URIs by environment, never on the command line).
- ``_metrics``: the router's Prometheus metrics read back, per version.
- ``_prometheus``: the same reading from a Prometheus HTTP API (the routers of a cluster).
- ``_preview``: what a deploy of a spec's model would apply to a cluster (``deploy --dry-run``), validated.
- ``_backends``: the backend of each endpoint (``ServingBackends``): local, or the Kubernetes one its
  deploy recorded (``backend.json``), chosen on deploy from the version's spec.
- ``_manifests``: the Kubernetes objects of an endpoint (plain: a Deployment and Service per version and a
  router with its routes in a ConfigMap; KServe: an InferenceService), rendered as plain dicts.
- ``_kubernetes``: ``KubernetesBackend``, the protocol on a cluster (server-side apply, readiness by watch,
  rollback of a rollout not ready in time, one message per API error); imported on first use, since the
  ``kubernetes`` client costs most of a second to import.
- ``_canary``: a model's canary record (``canary.json``), the window between two metric readings,
  the analysis thresholds in force, and the analysis of one window.
- ``_deploy``: the gated deploy of an evaluated version: a canary (challenger gate, a canary plan no
  looser than the policy's), a first production version (champion gate and approval) or staging.
- ``_advance``: one canary step once its window has baked: judge, then take the next step, hold
  (the last step below 100 % holds until promotion), or roll back (unless the policy denies it).
- ``_rollback``: the last known-good version back in traffic and in the ``champion`` alias.
- ``_tools``: the deployment agent's tools, binding deploy, advance, rollback and status to a context.
"""

from mlops_supervisor.tools._spec import check_deployment
from mlops_supervisor.tools.serving._backend import ServingBackend, staging_endpoint
from mlops_supervisor.tools.serving._backends import ServingBackends
from mlops_supervisor.tools.serving._feedback import (
    feedback_tool,
    ingest_feedback,
    read_feedback,
    read_feedback_contract,
    validate_feedback,
)
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._metrics import read_window
from mlops_supervisor.tools.serving._predictions import read_predictions
from mlops_supervisor.tools.serving._preview import Preview, preview
from mlops_supervisor.tools.serving._prometheus import PrometheusMetrics
from mlops_supervisor.tools.serving._tools import deployment_tools

__all__ = [
    "KubernetesBackend",
    "LocalBackend",
    "Preview",
    "PrometheusMetrics",
    "ServingBackend",
    "ServingBackends",
    "check_deployment",
    "deployment_tools",
    "feedback_tool",
    "ingest_feedback",
    "preview",
    "read_feedback",
    "read_feedback_contract",
    "read_predictions",
    "read_window",
    "staging_endpoint",
    "validate_feedback",
]


def __getattr__(name: str) -> object:
    # KubernetesBackend loads the kubernetes client, which only Kubernetes serving needs
    if name == "KubernetesBackend":
        from mlops_supervisor.tools.serving._kubernetes import KubernetesBackend

        return KubernetesBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
