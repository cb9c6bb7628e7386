"""The seven specialists: one spec each, with its prompt, allow-listed tools and duties."""

from types import MappingProxyType

from mlops_supervisor.agents import (
    data,
    deployment,
    evaluation,
    experimentation,
    observability,
    registry,
    security,
)
from mlops_supervisor.agents._spec import AgentSpec, load_prompt

SPECIALISTS: MappingProxyType[str, AgentSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            data.SPEC,
            experimentation.SPEC,
            evaluation.SPEC,
            registry.SPEC,
            deployment.SPEC,
            observability.SPEC,
            security.SPEC,
        )
    }
)
"""Every specialist by name, in lifecycle order."""

__all__ = ["SPECIALISTS", "AgentSpec", "load_prompt"]
