"""Typed progress events of a streamed run (``Supervisor.stream``), in the order the graph makes them.

Every text in an event is already redacted: arguments, messages, summaries and tokens come from
the graph's redacted state, or (tokens) through the supervisor's redactor before they are yielded.

    StreamEvent
     ├── Routed            the supervisor chose a specialist and gave it a task
     ├── ToolProposed      a specialist proposed a tool call (arguments redacted)
     ├── PolicyDecided     the policy (or approval) node decided a call: allow, deny, needs_approval
     ├── ToolFinished      a tool ran: its outcome and a short summary
     ├── Quarantined       a tool's output was flagged by the injection guard and withheld from the model
     ├── AgentReported     a specialist reported back to the supervisor
     ├── Tokens            model text as it streams, a sentence (or line) at a time
     └── ApprovalRequired  the thread paused: an action waits for a listed approver
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AgentReported",
    "ApprovalRequired",
    "PolicyDecided",
    "Quarantined",
    "Routed",
    "StreamEvent",
    "Tokens",
    "ToolFinished",
    "ToolProposed",
    "events_of",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class Routed(_Event):
    """The supervisor chose ``agent`` for ``task``."""

    kind: Literal["routed"] = "routed"
    agent: str
    task: str


class ToolProposed(_Event):
    """``agent`` proposed calling ``tool`` with ``args`` (redacted); the policy decides it next."""

    kind: Literal["tool_proposed"] = "tool_proposed"
    agent: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    call_id: str = ""


class PolicyDecided(_Event):
    """A decision on one action. For a denial ``message`` says what would satisfy the gate."""

    kind: Literal["decision"] = "decision"
    agent: str
    action: str
    decision: Literal["allow", "deny", "needs_approval"]
    reason_code: str
    message: str


class ToolFinished(_Event):
    """``tool`` ran: ``outcome`` (ok, error, unavailable, invalid_input, refused) and a short summary."""

    kind: Literal["tool_finished"] = "tool_finished"
    agent: str
    tool: str
    outcome: str
    reason_code: str = ""
    summary: str = ""


class Quarantined(_Event):
    """The injection guard flagged ``tool``'s output: the model saw only a notice."""

    kind: Literal["quarantined"] = "quarantined"
    agent: str
    tool: str
    kinds: list[str] = Field(default_factory=list)
    findings: int = 0
    sha256: str = ""


class AgentReported(_Event):
    """``agent`` finished its task and reported ``text`` to the supervisor."""

    kind: Literal["agent_reported"] = "agent_reported"
    agent: str
    text: str


class Tokens(_Event):
    """Model text from ``node`` as it streams: whole sentences or lines, redacted."""

    kind: Literal["tokens"] = "tokens"
    node: str
    text: str


class ApprovalRequired(_Event):
    """The thread paused: ``tool`` waits for one of ``approvers`` (not ``requester``) to approve or reject."""

    kind: Literal["approval_required"] = "approval_required"
    thread_id: str
    agent: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    requester: str
    approvers: list[str] = Field(default_factory=list)
    expires_at: str = ""
    approval_action: str = ""
    evidence_digest: str = ""
    request_id: str = ""
    summary: str = ""


StreamEvent = Annotated[
    Routed | ToolProposed | PolicyDecided | ToolFinished | Quarantined | AgentReported | Tokens | ApprovalRequired,
    Field(discriminator="kind"),
]
"""Any event ``Supervisor.stream`` yields before its ``RunResult``."""


# --- from the graph's stream to events ---------------------------------------------------------

# Where held-back text may be let go: after a line break, or after a sentence's end followed by a space.
_BOUNDARY = re.compile(r"\n|[.!?:;](?=\s)")


class _SentenceBuffer:
    """Model text held back until a sentence or line is whole, then redacted and let go.

    The chunks a model streams are raw: a key or a name can arrive split across chunks, and the
    redactor can only recognise it whole (and in context). So text is held until a boundary and
    each whole sentence is redacted before anyone sees it; the price is that tokens arrive a
    sentence at a time rather than one by one.
    """

    def __init__(self, redact: Callable[[str], str]) -> None:
        self._redact = redact
        self._held: dict[str, str] = {}

    def feed(self, node: str, text: str) -> Iterator[Tokens]:
        held = self._held.get(node, "") + text
        cut = 0
        for match in _BOUNDARY.finditer(held):
            cut = match.end()
        self._held[node] = held[cut:]
        if held[:cut].strip():
            yield Tokens(node=node, text=self._redact(held[:cut]))

    def flush(self, node: str | None = None) -> Iterator[Tokens]:
        for name in [node] if node is not None else list(self._held):
            held = self._held.pop(name, "")
            if held.strip():
                yield Tokens(node=name, text=self._redact(held))


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        part if isinstance(part, str) else str(part.get("text", ""))
        for part in content
        if isinstance(part, str) or part.get("type") == "text"
    )


class _Seen:
    """How many decisions and tool results of the thread's state were already reported, and the approval
    requests it holds (the interrupt itself carries only an id and a summary)."""

    def __init__(self, decisions: int, results: int, pending: Sequence[Mapping[str, Any]]) -> None:
        self.decisions = decisions
        self.results = results
        self.pending = list(pending)


def _update_events(
    node: str, update: Mapping[str, Any], seen: _Seen, approvers: Sequence[str], thread_id: str
) -> Iterator[Any]:
    """The events one node's (redacted) state update means."""
    if node == "supervisor" and update.get("route"):
        yield Routed(agent=update["route"]["agent"], task=update["route"].get("task", ""))
    messages = update.get("agent_messages") or []
    last = messages[-1] if messages else None
    if node not in {"supervisor", "policy", "approval", "tools", "finish"} and isinstance(last, AIMessage):
        for call in last.tool_calls:
            yield ToolProposed(agent=node, tool=call["name"], args=dict(call["args"]), call_id=str(call["id"] or ""))
    transcript = update.get("transcript") or []
    if transcript and isinstance(transcript[-1], AIMessage) and transcript[-1].name == node:
        yield AgentReported(agent=node, text=_text(transcript[-1]))
    if update.get("pending") is not None:
        seen.pending = list(update["pending"])
    decisions = update.get("decisions")
    if decisions is not None:
        for d in decisions[seen.decisions :]:
            yield PolicyDecided(
                agent=d.get("agent", node),
                action=d["action"],
                decision=d["decision"],
                reason_code=d["reason_code"],
                message=d["message"],
            )
        seen.decisions = len(decisions)
    results = update.get("tool_results")
    if results is not None:
        for r in results[seen.results :]:
            yield ToolFinished(
                agent=r["agent"],
                tool=r["tool"],
                outcome=r["outcome"],
                reason_code=r.get("reason_code", ""),
                summary=r.get("summary", ""),
            )
            q = r.get("quarantined")
            if q:
                yield Quarantined(
                    agent=r["agent"],
                    tool=r["tool"],
                    kinds=list(q.get("kinds", [])),
                    findings=int(q.get("findings", 0)),
                    sha256=q.get("sha256", ""),
                )
        seen.results = len(results)


def _interrupt_events(
    interrupts: Sequence[Any], pending: Sequence[Mapping[str, Any]], approvers: Sequence[str], thread_id: str
) -> Iterator[Any]:
    for item in interrupts:
        value = getattr(item, "value", None)
        if not (isinstance(value, Mapping) and value.get("kind") == "approval"):
            continue
        # the approval node answers the first pending request; the state holds it redacted
        request: Mapping[str, Any] = pending[0] if pending else value
        yield ApprovalRequired(
            thread_id=str(request.get("thread_id", thread_id)),
            agent=str(request.get("agent", "")),
            tool=str(request.get("tool", "")),
            args=dict(request.get("args") or {}),
            requester=str(request.get("requester", "")),
            approvers=list(approvers),
            expires_at=str(request.get("expires_at", "")),
            approval_action=str(request.get("approval_action", "")),
            evidence_digest=str(request.get("evidence_digest", "")),
            request_id=str(value.get("request_id", "")),
            summary=str(value.get("summary", "")),
        )


def events_of(
    chunks: Iterator[tuple[str, Any]],
    *,
    redact: Callable[[str], str],
    thread_id: str,
    approvers: Sequence[str] = (),
    decisions_before: int = 0,
    results_before: int = 0,
    pending_before: Sequence[Mapping[str, Any]] = (),
) -> Iterator[Any]:
    """Events from a graph stream in ``("updates" | "messages", chunk)`` pairs.

    ``decisions_before`` and ``results_before`` are how many the thread's state held when the
    stream started (a resumed run carries its earlier ones), so only new ones are reported;
    ``pending_before`` the approval requests it held.
    Model text is held back, redacted and let go a sentence at a time (``_SentenceBuffer``);
    what a node held is let go when that node's update arrives, before the update's own events.
    """
    seen = _Seen(decisions_before, results_before, pending_before)
    buffer = _SentenceBuffer(redact)
    for mode, chunk in chunks:
        if mode == "messages":
            message, metadata = chunk
            node = str(metadata.get("langgraph_node", "")) if isinstance(metadata, Mapping) else ""
            # Only what a model streams: a node's finished messages (a report, a redacted copy) come as updates.
            if isinstance(message, AIMessageChunk):
                text = _text(message)
                if text:
                    yield from buffer.feed(node, text)
            continue
        if mode != "updates" or not isinstance(chunk, Mapping):
            continue
        for node, update in chunk.items():
            if node == "__interrupt__":
                yield from buffer.flush()
                yield from _interrupt_events(update, seen.pending, approvers, thread_id)
                continue
            yield from buffer.flush(node)
            if isinstance(update, Mapping):
                yield from _update_events(node, update, seen, approvers, thread_id)
    yield from buffer.flush()
