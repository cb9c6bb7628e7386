"""The domain tools and their backends; every call reaches them through the policy node."""

from mlops_supervisor.tools._catalogue import build_tool_registry
from mlops_supervisor.tools._registry import GovernedTool, ToolContext, ToolRegistry

__all__ = ["GovernedTool", "ToolContext", "ToolRegistry", "build_tool_registry"]
