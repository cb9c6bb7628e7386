"""Serving: the backend protocol, the local backend, the model server, the router, the deployment tools.

``_backend`` is the protocol every serving backend implements; ``_local`` the embedded one
(model server and router processes on loopback, state under ``<workspace>/serving/``);
``_model_server`` the HTTP server of one model version; ``_router`` the weighted HTTP/1.1
proxy in front of the versions; ``_main`` the entry point those processes run; ``_metrics``
reads the router's Prometheus metrics back; ``_tools`` holds the deployment agent's tools
(gated deploys, canary steps with analysis, rollback, status).
"""

from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._metrics import read_window
from mlops_supervisor.tools.serving._tools import deployment_tools

__all__ = ["LocalBackend", "ServingBackend", "deployment_tools", "read_window"]
