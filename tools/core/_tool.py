"""The governed tool and the registry of tools: every declared tool, its argument schema and whether it mutates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ValidationError

from mlops_supervisor.policies import Decision

__all__ = ["GateResult", "GovernedTool", "ToolRegistry"]


@dataclass(frozen=True)
class GateResult:
    """A gate's verdict on one call, over evidence read now.

    ``approval_action`` is set when the call may run only with an approval bound to
    ``evidence_digest`` (the champion alias); otherwise the decision stands alone.
    """

    decision: Decision
    evidence_digest: str = ""
    approval_action: str = ""


@dataclass(frozen=True)
class GovernedTool:
    """A tool plus the facts the supervisor needs about it.

    ``gate``, when set, reads the evidence for a proposed call and applies the pure gate
    from ``policies.gates``; the policy node calls it before the tool runs, and the tool
    body calls the same function again before it changes anything.
    """

    tool: BaseTool
    mutates: bool
    available: bool = True
    gate: Callable[[Mapping[str, Any]], GateResult] | None = None

    @property
    def name(self) -> str:
        """The tool's name, as models call it."""
        return self.tool.name

    @classmethod
    def from_function(
        cls,
        name: str,
        description: str,
        args: type[BaseModel],
        func: Callable[..., Any],
        *,
        mutates: bool,
        gate: Callable[[Mapping[str, Any]], GateResult] | None = None,
        available: bool = True,
    ) -> GovernedTool:
        """A governed tool whose body is ``func``, with ``args`` as its argument schema."""
        from langchain_core.tools import StructuredTool

        tool = StructuredTool.from_function(func=func, name=name, description=description, args_schema=args)
        return cls(tool=tool, mutates=mutates, available=available, gate=gate)


class ToolRegistry:
    """An immutable set of governed tools, looked up by name."""

    def __init__(self, tools: Iterable[GovernedTool]) -> None:
        self._tools: dict[str, GovernedTool] = {}
        for governed in tools:
            if governed.name in self._tools:
                raise ValueError(f"tool {governed.name!r} is declared twice")
            self._tools[governed.name] = governed

    @property
    def names(self) -> frozenset[str]:
        """Every declared tool name."""
        return frozenset(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def get(self, name: str) -> GovernedTool:
        """The tool called ``name``; ``KeyError`` when none is declared."""
        return self._tools[name]

    def langchain_tools(self, names: Iterable[str]) -> list[BaseTool]:
        """The LangChain tools for ``names``, in the order given, for ``bind_tools``."""
        return [self._tools[n].tool for n in names]

    def validate_args(self, name: str, args: Mapping[str, Any]) -> str | None:
        """``None`` when ``args`` fit the tool's schema, else a readable reason."""
        schema = self._tools[name].tool.args_schema
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            return None
        try:
            schema.model_validate(dict(args))
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
        return None

    def replaced(self, **tools: GovernedTool) -> ToolRegistry:
        """A copy with some tools swapped by name (for tests and custom backends)."""
        for name in tools:
            if name not in self._tools:
                raise KeyError(f"no tool named {name!r} to replace")
        return ToolRegistry({**self._tools, **tools}.values())
