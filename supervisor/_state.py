"""The graph's state: plain data and LangChain messages only, all of it already redacted."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from langchain_core.messages import BaseMessage

__all__ = ["STAGES", "SupervisorState", "ThreadStatus", "initial_state"]

STAGES = ("data", "train", "evaluate", "register", "deploy", "monitor")

ThreadStatus = Literal["running", "done", "refused", "invalid_input", "failed"]
"""``running`` from the start until the finish node records the outcome (``derive_status``)."""


class SupervisorState(TypedDict, total=False):
    """One thread's state. Every channel is last-value: nodes write whole new lists."""

    thread_id: str
    requester: str
    request: str
    request_signed: dict[str, Any] | None
    model: str
    mode: Literal["ask", "pipeline"]
    commands: list[dict[str, Any]]
    transcript: list[BaseMessage]
    agent_messages: list[BaseMessage]
    route: dict[str, str]
    plan: list[dict[str, str]]
    allowed: list[dict[str, Any]]
    pending: list[dict[str, Any]]
    decisions: list[dict[str, Any]]
    tool_results: list[dict[str, Any]]
    steps: int
    answer: str
    failure: str
    status: ThreadStatus
    report: dict[str, str]
    usage: dict[str, dict[str, Any]]
    """Model calls, tokens and cost per node (``_usage.add_usage``); empty for offline and scripted models."""


def initial_state(
    *,
    thread_id: str,
    requester: str,
    request: str,
    model: str,
    transcript: list[BaseMessage],
    mode: Literal["ask", "pipeline"] = "ask",
    commands: list[dict[str, Any]] | None = None,
    request_signed: dict[str, Any] | None = None,
) -> SupervisorState:
    """The state a new request starts from; it resets everything request-scoped."""
    return SupervisorState(
        thread_id=thread_id,
        requester=requester,
        request=request,
        request_signed=request_signed,
        model=model,
        mode=mode,
        commands=commands or [],
        transcript=transcript,
        agent_messages=[],
        route={},
        plan=[],
        allowed=[],
        pending=[],
        decisions=[],
        tool_results=[],
        steps=0,
        answer="",
        failure="",
        status="running",
        report={},
        usage={},
    )
