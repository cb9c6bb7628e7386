"""Per-tool-call cost of governance (policy node + redaction + audit) against a bare ToolNode.

Both sides run the same tool with the same 1 KB payload through a compiled LangGraph graph,
in one process, interleaved in rounds so machine noise hits both alike:

- bare: START -> ToolNode -> END, fed an AIMessage with one tool call;
- governed: START -> policy node -> tool runner -> END, the supervisor's own node functions
  (allow-list and policy decision, argument validation, redaction of input and output with the
  default ``PresidioRedactor`` (the same payload each call: its cache answers after the first),
  three hash-chained audit appends, untrusted-data wrapping).

Run: python benchmarks/bench_tool_call_overhead.py [--calls N] [--rounds R]
It prints a Markdown row and, with --write, replaces the row in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel

from mlops_supervisor._graph import Runtime, _policy_node, _tools_node
from mlops_supervisor._llm import resolve_model
from mlops_supervisor._logging import make_logger
from mlops_supervisor._state import SupervisorState
from mlops_supervisor.agents import AgentSpec
from mlops_supervisor.policies import AuditLog, Policy, redact_value
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.tools import GovernedTool, ToolRegistry

PAYLOAD = ("The quick brown fox jumps over the lazy dog; model churn v3 scored 0.91. " * 14)[:1024]


class EchoArgs(BaseModel):
    text: str


def echo(text: str) -> str:
    return text


def _tool() -> StructuredTool:
    return StructuredTool.from_function(func=echo, name="echo", description="echo text", args_schema=EchoArgs)


def bare_graph() -> Any:
    from langgraph.graph import MessagesState

    builder = StateGraph(MessagesState)
    builder.add_node("tools", ToolNode([_tool()]))
    builder.add_edge(START, "tools")
    builder.add_edge("tools", END)
    return builder.compile()


def governed_graph(workspace: Path) -> Any:
    redactor = PresidioRedactor()  # the supervisor's default: Presidio, the secret recognizers, the allow-list
    audit = AuditLog(workspace / "audit.jsonl", redact=lambda v: redact_value(redactor, v))
    spec = AgentSpec(name="bench", role="benchmark", tools=("echo",), duties=(), never=())
    runtime = Runtime(
        policy=Policy(),
        audit=audit,
        redactor=redactor,
        tools=ToolRegistry([GovernedTool(tool=_tool(), mutates=False)]),
        models=resolve_model("offline", nodes=("supervisor",)),
        log=make_logger(workspace / "logs", redactor=redactor),
        specialists={"bench": spec},
    )
    builder: StateGraph[SupervisorState] = StateGraph(SupervisorState)
    builder.add_node("policy", _policy_node(runtime), destinations=("tools", "bench"))
    builder.add_node("tools", _tools_node(runtime), destinations=("bench",))
    builder.add_node("bench", lambda state: {})
    builder.add_edge(START, "policy")
    builder.add_edge("bench", END)
    return builder.compile()


def _call(i: int) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": "echo", "args": {"text": PAYLOAD}, "id": f"c{i}", "type": "tool_call"}]
    )


def time_bare(graph: Any, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        out = graph.invoke({"messages": [_call(i)]})
        assert out["messages"][-1].content == PAYLOAD
    return (time.perf_counter() - start) / n


def time_governed(graph: Any, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        state = {
            "thread_id": "bench",
            "requester": "bench",
            "route": {"agent": "bench", "task": "echo"},
            "agent_messages": [HumanMessage("echo"), _call(i)],
            "decisions": [],
            "tool_results": [],
        }
        out = graph.invoke(state)
        assert PAYLOAD in out["agent_messages"][-1].content
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="tool calls per side per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--write", action="store_true", help="update the row in BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bare, governed = bare_graph(), governed_graph(Path(tmp))
        time_bare(bare, 20)
        time_governed(governed, 20)  # warm both
        bare_t, gov_t = [], []
        for _ in range(args.rounds):
            bare_t.append(time_bare(bare, args.calls))
            gov_t.append(time_governed(governed, args.calls))
    b, g = statistics.median(bare_t), statistics.median(gov_t)
    row = (
        f"| per-tool-call overhead, 1 KB payload | bare ToolNode {b * 1e3:.3f} ms | governed {g * 1e3:.3f} ms "
        f"| **{g / b:.2f}x** (target ≤ 3x) | `python benchmarks/bench_tool_call_overhead.py --calls {args.calls} "
        f"--rounds {args.rounds}` |"
    )
    print(row)
    if args.write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _rows import write_rows

        write_rows(Path(__file__).resolve().parents[1] / "BENCHMARKS.md", {"| per-tool-call overhead": row})


if __name__ == "__main__":
    main()
