"""The LLM layer: scripted doubles, the request switch, and the OpenAI path over a real HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import AIMessage, HumanMessage

from mlops_supervisor import Supervisor
from mlops_supervisor._llm import resolve_model
from mlops_supervisor.policies import ScriptExhaustedError, UsageError
from mlops_supervisor.testing import ScriptedChatModel


def test_scripted_model_binds_streams_and_runs_out_loudly() -> None:
    """bind_tools works, streaming yields the tool call, and an exhausted script raises."""
    model = ScriptedChatModel(
        responses=[
            AIMessage(content="", tool_calls=[{"name": "show_policy", "args": {}, "id": "c1", "type": "tool_call"}]),
        ]
    )
    bound = model.bind_tools([])
    chunks = list(bound.stream([HumanMessage("go")]))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.tool_calls[0]["name"] == "show_policy"
    with pytest.raises(ScriptExhaustedError, match="response 2 but its script holds 1"):
        model.invoke([HumanMessage("again")])


def test_unknown_script_node_is_named(tmp_path: Path) -> None:
    """A script naming a node the graph does not have is refused with the allowed names."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"planner": [{"content": "x"}]}), "utf-8")
    with pytest.raises(UsageError, match=r"unknown node\(s\) \['planner'\]; allowed: supervisor, data"):
        resolve_model(f"scripted:{path}", nodes=("supervisor", "data"))


class _FakeOpenAI(BaseHTTPRequestHandler):
    """Speaks enough of POST /v1/chat/completions for the real openai SDK."""

    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        tools = [t["function"]["name"] for t in body.get("tools", [])]
        if "Route" in tools:
            routed = sum(
                1 for r in type(self).requests if any(t["function"]["name"] == "Route" for t in r.get("tools", []))
            )
            args = (
                {"next": "security", "task": "show the policy"}
                if routed == 1
                else {"next": "finish", "answer": "policy shown"}
            )
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_r{routed}",
                        "type": "function",
                        "function": {"name": "Route", "arguments": json.dumps(args)},
                    }
                ],
            }
        elif body["messages"][-1]["role"] == "tool":
            message = {"role": "assistant", "content": "The policy holds promote_model for approval."}
        else:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_t1", "type": "function", "function": {"name": "show_policy", "arguments": "{}"}}
                ],
            }
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-local-only")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openai_path_is_refused_while_switched_off(workspace: Path, openai_server: str) -> None:
    """With MLOPS_ALLOW_MODEL_REQUESTS=0 (the test default) no request leaves the process."""
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "failed"
    assert "MLOPS_ALLOW_MODEL_REQUESTS is off" in result.report.summary
    assert _FakeOpenAI.requests == []


def test_openai_path_routes_and_calls_tools(
    workspace: Path, openai_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opted in, the real openai SDK drives routing and a tool call through the policy node."""
    monkeypatch.setenv("MLOPS_ALLOW_MODEL_REQUESTS", "1")
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    assert [(d.agent, d.action, d.decision) for d in result.decisions] == [("security", "show_policy", "allow")]
    assert "policy shown" in result.report.summary
    specialist_call = next(r for r in _FakeOpenAI.requests if r["messages"][-1]["role"] == "tool")
    assert [t["function"]["name"] for t in specialist_call["tools"]] == [
        "verify_audit_chain",
        "show_policy",
        "scan_prompt_injection",
        "review_audit",
        "permission_matrix",
        "security_report",
    ]


def test_openai_without_key_is_a_usage_error(workspace: Path) -> None:
    """openai:MODEL without OPENAI_API_KEY names the variable and the offline alternative."""
    with pytest.raises(UsageError, match="needs OPENAI_API_KEY"):
        Supervisor(workspace, model="openai:gpt-test")
