"""The tool core every domain builds on.

The governed tool and the registry of tools (``_tool``), the one governed invocation every
state-changing call passes (``_chokepoint``), the context a tool body gets (``_context``), the
workspace's MLflow store (``_store``), the per-model lock (``_locks``), safe model loading
(``_models``), atomic writes of state files (``_files``), HTTP clients held to the egress allow-list
(``_egress``) and the argument schemas domains share (``_schemas``).
Nothing here knows a lifecycle stage.
"""

from mlops_supervisor.tools.core._chokepoint import CallSite, Chokepoint, Invocation, Origin, invoked_from, run_gate
from mlops_supervisor.tools.core._context import ProgressFactory, ToolContext, no_progress
from mlops_supervisor.tools.core._egress import EgressTransport, context_egress, egress_client
from mlops_supervisor.tools.core._files import publish_dir, write_atomic, write_json_atomic
from mlops_supervisor.tools.core._locks import model_lock
from mlops_supervisor.tools.core._models import TRUSTED_ROOTS, foreign_types, load_sklearn_model
from mlops_supervisor.tools.core._schemas import ModelArgs, ModelVersionArgs, SpecArgs, checked_name, to_json
from mlops_supervisor.tools.core._store import (
    TrackingServerRefusedError,
    artifact_root,
    check_tracking_uri,
    default_tracking_uri,
    ensure_experiment,
    server_of,
    tracking_server_refusal,
    using_store,
)
from mlops_supervisor.tools.core._tool import GateResult, GovernedTool, Invoke, ToolRegistry

__all__ = [
    "TRUSTED_ROOTS",
    "CallSite",
    "Chokepoint",
    "EgressTransport",
    "GateResult",
    "GovernedTool",
    "Invocation",
    "Invoke",
    "ModelArgs",
    "ModelVersionArgs",
    "Origin",
    "ProgressFactory",
    "SpecArgs",
    "ToolContext",
    "ToolRegistry",
    "TrackingServerRefusedError",
    "artifact_root",
    "check_tracking_uri",
    "checked_name",
    "context_egress",
    "default_tracking_uri",
    "egress_client",
    "ensure_experiment",
    "foreign_types",
    "invoked_from",
    "load_sklearn_model",
    "model_lock",
    "no_progress",
    "publish_dir",
    "run_gate",
    "server_of",
    "to_json",
    "tracking_server_refusal",
    "using_store",
    "write_atomic",
    "write_json_atomic",
]
