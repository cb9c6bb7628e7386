"""The domain tools and their backends; every call reaches them through the policy node."""

from mlops_supervisor.tools._catalogue import build_tool_registry
from mlops_supervisor.tools._registry import (
    GateResult,
    GovernedTool,
    ProgressFactory,
    ToolContext,
    ToolRegistry,
    no_progress,
)
from mlops_supervisor.tools._spec import LoadedSpec, PipelineSpec, load_spec, spec_json_schema

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
