"""What a specialist is: a name, a prompt, an allow-list of tools and its duties."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

__all__ = ["AgentSpec", "load_prompt"]


def load_prompt(name: str) -> str:
    """The markdown prompt ``prompts/<name>.md`` shipped as package data."""
    return resources.files("mlops_supervisor.prompts").joinpath(f"{name}.md").read_text("utf-8")


@dataclass(frozen=True)
class AgentSpec:
    """One specialist. ``tools`` is its allow-list; the policy node enforces it on every call."""

    name: str
    role: str
    tools: tuple[str, ...]
    duties: tuple[str, ...]
    never: tuple[str, ...]

    @property
    def prompt(self) -> str:
        """The specialist's system prompt."""
        return load_prompt(self.name)

    @property
    def allow_list(self) -> frozenset[str]:
        """The tools this specialist may call."""
        return frozenset(self.tools)
