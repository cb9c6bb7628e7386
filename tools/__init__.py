"""The domain tools and their backends; every call reaches them through the policy node.

One subpackage per part of the lifecycle, each owning its tools: ``core`` (the governed tool,
the registry of tools, the context, the MLflow store, locks, atomic writes), ``data``,
``training``, ``evaluation``, ``registry`` (the MLflow model registry and the evidence the
gates read), ``serving`` (backends, model server, router, deployment tools) and
``monitoring``. ``_catalogue`` is the one list of every tool; ``_spec`` the pipeline spec all
stages read. This module is the public surface.
"""

from typing import TYPE_CHECKING, Any

from mlops_supervisor.tools._spec import LoadedSpec, PipelineSpec, load_spec, spec_json_schema
from mlops_supervisor.tools.core import (
    GateResult,
    GovernedTool,
    ProgressFactory,
    ToolContext,
    ToolRegistry,
    no_progress,
)

if TYPE_CHECKING:
    from mlops_supervisor.tools._catalogue import build_tool_registry

__all__ = [
    "GateResult",
    "GovernedTool",
    "LoadedSpec",
    "PipelineSpec",
    "ProgressFactory",
    "ToolContext",
    "ToolRegistry",
    "build_tool_registry",
    "load_spec",
    "no_progress",
    "spec_json_schema",
]


def __getattr__(name: str) -> Any:
    # The catalogue imports every tool and with them pandas, scikit-learn and MLflow: about a second a
    # process. A command that reads only the spec or the tool core (`spec schema`, `audit verify`,
    # `alert-rules`) does without it, so it is imported when first named.
    if name == "build_tool_registry":
        from mlops_supervisor.tools._catalogue import build_tool_registry

        globals()[name] = build_tool_registry
        return build_tool_registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
