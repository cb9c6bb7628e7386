"""The graph's shape, the allow-list under a hostile model, budgets and redaction of everything it stores."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml
from langchain_core.tools import StructuredTool

from mlops_supervisor import Supervisor
from mlops_supervisor.agents import SPECIALISTS
from mlops_supervisor.testing import adversarial_allow_list_script
from mlops_supervisor.tools import GovernedTool, ToolRegistry

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.mmd"


def test_mermaid_snapshot(workspace: Path) -> None:
    """The compiled graph's Mermaid drawing matches the reviewed snapshot."""
    with Supervisor(workspace) as sup:
        assert sup.mermaid().strip() == SNAPSHOT.read_text("utf-8").strip()


def test_only_policy_and_approval_lead_to_tools(workspace: Path) -> None:
    """No specialist has an edge straight to the tool runner: every call passes the policy node."""
    with Supervisor(workspace) as sup:
        drawn = sup._graph("offline").get_graph()
    sources = {edge.source for edge in drawn.edges if edge.target == "tools"}
    assert sources == {"policy", "approval"}


def _spy_registry(sup: Supervisor, ran: list[str]) -> ToolRegistry:
    def spy(governed: GovernedTool) -> GovernedTool:
        def body(**kwargs: Any) -> str:
            ran.append(governed.name)
            return "ran"

        tool = StructuredTool.from_function(
            func=body, name=governed.name, description=governed.tool.description, args_schema=governed.tool.args_schema
        )
        return GovernedTool(tool=tool, mutates=governed.mutates)

    return ToolRegistry(spy(g) for g in sup.tools)


def test_hostile_model_gets_every_foreign_call_denied(workspace: Path, tmp_path: Path) -> None:
    """Each specialist in turn proposes every other specialist's tools: all denied, all audited, no body runs."""
    script = adversarial_allow_list_script({n: s.tools for n, s in SPECIALISTS.items()})
    path = tmp_path / "adversary.yaml"
    path.write_text(yaml.safe_dump(script), "utf-8")
    ran: list[str] = []
    with Supervisor(workspace, user="mallory") as probe:
        spies = _spy_registry(probe, ran)
    with Supervisor(workspace, model=f"scripted:{path}", user="mallory", tools=spies) as sup:
        result = sup.ask("do everything")
        audited = [r for r in sup.audit.records() if r["event"] == "decision" and r["thread_id"] == result.thread_id]
    expected = {
        (name, tool)
        for name, spec in SPECIALISTS.items()
        for other in SPECIALISTS.values()
        if other.name != name
        for tool in other.tools
        if tool not in spec.tools
    }
    assert ran == []
    assert result.status == "refused"
    assert {(d.agent, d.action) for d in result.decisions} == expected
    assert all(d.decision == "deny" and d.reason_code == "not_in_allow_list" for d in result.decisions)
    assert {(r["agent"], r["action"]) for r in audited} == expected
    assert len(audited) == len(expected)


def test_allowed_call_runs_its_body(workspace: Path) -> None:
    """The same spy registry does run a call the policy allows, so the hostile test can fail."""
    ran: list[str] = []
    with Supervisor(workspace) as probe:
        spies = _spy_registry(probe, ran)
    with Supervisor(workspace, tools=spies) as sup:
        result = sup.ask("show policy")
    assert ran == ["show_policy"]
    assert result.status == "done"


def test_step_budget_stops_a_runaway_model(workspace: Path, tmp_path: Path) -> None:
    """A model that keeps calling tools is stopped by limits.max_steps with a recorded reason."""
    script = {
        "supervisor": [{"route": "security", "task": "loop"}],
        "security": [{"tool_calls": [{"name": "show_policy", "args": {}}]} for _ in range(30)],
    }
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(script), "utf-8")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"limits": {"max_steps": 6}}), "utf-8")
    with Supervisor(workspace, model=f"scripted:{path}", policy=policy) as sup:
        result = sup.ask("loop forever")
    assert result.status == "failed"
    assert result.decisions[-1].reason_code == "step_budget_exhausted"
    assert "max_steps" in result.report.summary


CANARY_SECRET = "sk-proj-CANARYcanaryCANARYcanary0042"
CANARY_EMAIL = "canary.person@example.org"


def test_nothing_raw_reaches_state_logs_audit_or_model(workspace: Path, tmp_path: Path) -> None:
    """Planted secrets in the request and in tool arguments appear in no checkpoint, log, audit line or LLM message."""
    script = {
        "supervisor": [
            {"route": "security", "task": f"check {CANARY_EMAIL} with {CANARY_SECRET}"},
            {"route": "finish", "answer": "ok"},
        ],
        "security": [
            {
                "tool_calls": [{"name": "scan_prompt_injection", "args": {"text": f"{CANARY_EMAIL} {CANARY_SECRET}"}}],
                "content": f"echo {CANARY_SECRET}",
            },
            {"content": f"done, told {CANARY_EMAIL}"},
        ],
    }
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(script), "utf-8")
    with Supervisor(workspace, model=f"scripted:{path}") as sup:
        sup.ask(f"please mail {CANARY_EMAIL} the key {CANARY_SECRET}")
        provider = sup._provider(sup.model_spec)
        seen = [m for node in ("supervisor", "security") for call in provider.chat_model(node).calls for m in call]  # type: ignore[attr-defined]
    model_text = " ".join(str(m.content) for m in seen)
    assert seen
    assert "<API_KEY>" in model_text
    stored = [
        (workspace / "audit.jsonl").read_bytes(),
        (workspace / "logs" / "mlops-supervisor.jsonl").read_bytes(),
        b"".join(
            bytes(row[0])
            for row in sqlite3.connect(workspace / "checkpoints.sqlite").execute(
                "SELECT checkpoint FROM checkpoints UNION ALL SELECT value FROM writes"
            )
        ),
        model_text.encode(),
    ]
    for blob in stored:
        assert CANARY_SECRET.encode() not in blob
        assert CANARY_EMAIL.encode() not in blob
