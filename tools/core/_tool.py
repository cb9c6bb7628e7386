"""The governed tool and the registry of tools: every declared tool, its argument schema and whether it mutates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from mlops_supervisor.policies import Decision, UsageError

if TYPE_CHECKING:
    # langchain_core.tools costs a few tenths of a second to import; a process that only reads the
    # tool core (`audit verify`, `spec check`) never builds a tool, so it is imported where one is built.
    from langchain_core.tools import BaseTool

__all__ = ["GateResult", "GovernedTool", "Invoke", "ToolRegistry"]

Invoke = Callable[["GovernedTool", dict[str, Any]], Any]
"""The chokepoint's direct call: decide ``(tool, args)``, audit it, run the tool's body, audit the result."""


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

    A mutating tool never exposes its body: its ``tool`` is an entry whose every call goes
    through the chokepoint it is routed through (``routed_through``; a supervisor routes its
    registry through its own), which decides, audits and only then runs the body. Unrouted,
    the entry refuses. The body stays private to the chokepoint.
    """

    tool: BaseTool
    mutates: bool
    available: bool = True
    gate: Callable[[Mapping[str, Any]], GateResult] | None = None
    _body: BaseTool | None = field(default=None, repr=False, compare=False)
    _invoke: Invoke | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.mutates:
            return
        # Rebuilt on every construction (``dataclasses.replace`` included), so the entry always
        # answers for this very tool: its gate, its body, its route.
        body = self._body if self._body is not None else _body_of(self.tool)
        schema = body.args_schema if body.args_schema is not None else body.get_input_schema()
        from langchain_core.tools import StructuredTool

        entry = StructuredTool(name=body.name, description=body.description, args_schema=schema, func=_Entry(self))
        object.__setattr__(self, "_body", body)
        object.__setattr__(self, "tool", entry)

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

    def routed_through(self, invoke: Invoke) -> GovernedTool:
        """This tool with its entry routed through ``invoke`` (a chokepoint's direct call); a read-only tool as is."""
        return replace(self, _invoke=invoke) if self.mutates else self

    def validate_args(self, args: Mapping[str, Any]) -> str | None:
        """``None`` when ``args`` fit the tool's schema, else a readable reason."""
        schema = self.tool.args_schema
        if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
            return None
        try:
            schema.model_validate(dict(args))
        except ValidationError as exc:
            return "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
        return None


class _Entry:
    """What a mutating tool's public ``BaseTool`` runs: the call goes to the chokepoint, never to the body."""

    __slots__ = ("governed",)

    def __init__(self, governed: GovernedTool) -> None:
        self.governed = governed

    def __call__(self, **args: Any) -> Any:
        invoke = self.governed._invoke
        if invoke is None:
            raise UsageError(
                f"{self.governed.name!r} changes state and is not routed through a chokepoint, so nothing was done: "
                "call it through a Supervisor (`sup.call(...)`, `sup.tools`) or a registry from build_tool_registry"
            )
        return invoke(self.governed, args)


def _body_of(tool: BaseTool) -> BaseTool:
    """The body behind ``tool``: itself, or the body of the governed tool whose entry it is."""
    func = getattr(tool, "func", None)
    if isinstance(func, _Entry):
        body = func.governed._body
        assert body is not None  # a mutating tool's entry always has its body
        return body
    return tool


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
        return self._tools[name].validate_args(args)

    def routed_through(self, invoke: Invoke) -> ToolRegistry:
        """A copy whose mutating tools run through ``invoke`` (a chokepoint's direct call), whatever they ran through."""
        return ToolRegistry(governed.routed_through(invoke) for governed in self._tools.values())

    def replaced(self, **tools: GovernedTool) -> ToolRegistry:
        """A copy with some tools swapped by name (for tests and custom backends)."""
        for name in tools:
            if name not in self._tools:
                raise KeyError(f"no tool named {name!r} to replace")
        return ToolRegistry({**self._tools, **tools}.values())
