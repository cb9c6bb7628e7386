"""Who may call what: each agent's tools with whether they change state, run a gate on evidence,
are held for approval or denied by the policy in force.

A tool no agent holds (``restore_endpoints`` and ``stop_endpoints``, behind the CLI's ``up``
and ``down``) is listed under the agent ``(direct)``: only a person's direct, decided and
audited call reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from mlops_supervisor.policies import Policy
from mlops_supervisor.tools.core import ToolRegistry

__all__ = ["DIRECT", "permission_rows"]

DIRECT = "(direct)"


def permission_rows(
    registry: ToolRegistry, policy: Policy, specialists: Mapping[str, Iterable[str]]
) -> list[dict[str, Any]]:
    """One row per (agent, tool): mutates, gate, held_for_approval, denied, available."""
    held, denied = set(policy.approval.required_for), set(policy.tools.denied)

    def row(agent: str, tool: str) -> dict[str, Any]:
        governed = registry.get(tool) if tool in registry else None
        return {
            "agent": agent,
            "tool": tool,
            "mutates": bool(governed and governed.mutates),
            "gate": bool(governed and governed.gate is not None),
            "held_for_approval": tool in held,
            "denied": tool in denied,
            "available": bool(governed and governed.available),
        }

    rows = [row(agent, tool) for agent, tools in specialists.items() for tool in tools]
    held_by_someone = {tool for tools in specialists.values() for tool in tools}
    rows += [row(DIRECT, name) for name in sorted(registry.names - held_by_someone)]
    return rows


def specialists_allow_lists() -> dict[str, tuple[str, ...]]:
    """Each specialist's allow-list.

    Imported here, at call time: agents name tools and import nothing of them, so reading the
    allow-lists from a tool is no cycle; the matrix is the one tool that needs them.
    """
    from mlops_supervisor.agents import SPECIALISTS

    return {name: spec.tools for name, spec in SPECIALISTS.items()}
