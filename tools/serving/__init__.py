"""Serving: the backend protocol, the local backend, the model server, the router, the deployment tools.

- ``_backend``: the protocol every serving backend implements.
- ``_local``: the embedded backend, its state (``<workspace>/serving/<model>/state.json`` and the
  ``routes.json`` the router reads) and the protocol's operations over it.
- ``_processes``: the local backend's server processes: spawn one, recorded under ``procs/``, and
  wait for its /health; read the records; check a pid is alive (zombies and reused pids are not);
  end one.
- ``_model_server``: the HTTP server of one model version.
- ``_router``: the weighted HTTP/1.1 proxy in front of the versions.
- ``_main``: the entry point those server processes run.
- ``_metrics``: the router's Prometheus metrics read back, per version.
- ``_canary``: a model's canary record (``canary.json``), the window between two metric readings,
  and the analysis of one window.
- ``_deploy``: the gated deploy of an evaluated version, as first version, canary or staging.
- ``_advance``: one canary step: judge, then take the next step, hold, or roll back.
- ``_rollback``: the last known-good version back in traffic and in the ``champion`` alias.
- ``_tools``: the deployment agent's tools, binding deploy, advance, rollback and status to a context.
"""

from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._metrics import read_window
from mlops_supervisor.tools.serving._tools import deployment_tools

__all__ = ["LocalBackend", "ServingBackend", "deployment_tools", "read_window"]
