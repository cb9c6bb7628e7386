"""The terminal chat as a person uses it: under a pseudo-terminal, typing requests, reading the screen, approving."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from mlops_supervisor.policies import AuditLog
from mlops_supervisor.testing import KeyRing, OpenAIStub, Reply, install_policy

from .conftest import CLI
from .test_pipeline import _adult_slice, small_spec

PROMPT = "you> "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
SECRET = "ghp_" + "Zq8Xv2Lm4Nw7Rt1Yp5Ks9Hd3Fb6Gc0Jx2Ue"  # shaped like a GitHub token, made up


class Chat:
    """One ``mlops-supervisor chat`` under a pseudo-terminal; ``screen`` is everything it printed, ANSI stripped."""

    def __init__(self, ws: Path, *args: str, user: str = "alice", env: dict[str, str] | None = None) -> None:
        self.raw: list[str] = []
        self._seen = 0
        self.child = pexpect.spawn(
            CLI,
            ["--workspace", str(ws), "--as", user, "chat", *args],
            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "220", "LINES": "60", **(env or {})},
            dimensions=(60, 220),
            encoding="utf-8",
            codec_errors="replace",
            timeout=60,
        )
        self.child.logfile_read = self

    def write(self, text: str) -> None:
        self.raw.append(text)

    def flush(self) -> None:
        pass

    @property
    def screen(self) -> str:
        return _ANSI.sub("", "".join(self.raw))

    def expect(self, pattern: str, timeout: float = 60) -> str:
        """Wait for ``pattern`` (plain text) on the screen past the last match, ANSI codes ignored (a styled line
        is several escape-separated runs); the text between, ANSI stripped."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen
            found = screen.find(pattern, self._seen)
            if found >= 0:
                before, self._seen = screen[self._seen : found], found + len(pattern)
                return before
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} not shown within {timeout} s; after the last match:\n{screen[self._seen :]}"
                )
            try:
                self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(
                    f"the chat ended before {pattern!r}; after the last match:\n{screen[self._seen :]}"
                ) from None

    def say(self, line: str, timeout: float = 60) -> str:
        """Type ``line`` and wait for the next prompt; what the turn printed, ANSI stripped."""
        self.child.sendline(line)
        return self.expect(PROMPT, timeout)

    def leave(self, how: str = "/quit") -> int:
        if how == "ctrl-d":
            self.child.sendeof()
        else:
            self.child.sendline(how)
        self.child.expect(pexpect.EOF, timeout=30)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)


@pytest.fixture
def ws(workspace: Path, keys: KeyRing) -> Iterator[Path]:
    """A workspace whose policy lets alice request and bob approve; its servers are stopped afterwards."""
    install_policy(workspace, keys.policy(approvers=["bob"], people=["alice"]), admin="bob", keys=keys)
    yield workspace
    from mlops_supervisor.tools.serving import LocalBackend

    LocalBackend.for_workspace(workspace).down()


def _audit(ws: Path) -> list[dict[str, object]]:
    return list(AuditLog(ws / "audit.jsonl").records())


def test_a_lifecycle_asked_streamed_approved_inline_and_resumed(ws: Path, tmp_path: Path) -> None:
    """The chat asks for the one missing input, streams specialists, tools and gate decisions, shows the evidence,
    refuses a self-approval, finishes on a listed approver's signature, quits cleanly, and --thread resumes it."""
    spec = small_spec(tmp_path, _adult_slice(), data__sensitive_features=["sex"])
    chat = Chat(ws)
    header = chat.expect(PROMPT)
    assert re.search(r"user\s+alice", header) and re.search(r"model\s+offline", header), header
    thread = re.search(r"thread\s+(t-[0-9a-f]{12})", header)
    assert thread is not None, header
    thread_id = thread.group(1)

    chat.child.sendline(
        f"lifecycle {spec} through deploy use_case='rank income offers' sensitivity=internal serving_target=local"
    )
    asked = chat.expect("What p95 latency must a prediction keep, in milliseconds? ")
    assert "1 input(s) missing" in asked
    chat.child.sendline("fast")
    refused = chat.expect("What p95 latency must a prediction keep, in milliseconds? ")
    assert "not accepted: 'fast' is not a number of milliseconds" in refused
    paused = chat.say("250", timeout=240)

    # the work as it happened: specialists, calls with their arguments, decisions, outcomes
    for line in (
        "→ data: call validate_dataset",
        "⚙ train_model {",
        "✔ allowed train_model",
        "↳ train_model ok",
        "→ evaluation: call evaluate_model",
        "↳ register_model ok",
        "→ deployment: call deploy_model",
        '⚙ deploy_model {"model": "small-model", "version": 1',
        "⏸ waiting for approval: deploy_model",
        "awaiting_approval · thread " + thread_id,
    ):
        assert line in paused, (line, paused)
    assert paused.index("✔ allowed train_model") < paused.index("↳ train_model ok") < paused.index("⏸ waiting")
    raw = "".join(chat.raw)
    assert re.search(r"\x1b\[[0-9;]*32m\s*✔ allowed train_model", raw), "allowed is green"
    assert re.search(r"\x1b\[[0-9;]*33m\s*⏸ waiting for approval: deploy_model", raw), "held is yellow"
    # the evidence the approver signs off on, read from the store, and who may approve
    evidence = paused[paused.index("awaiting approval") :]
    assert "small-model" in evidence and "roc_auc" in evidence, evidence
    assert "may approve: bob (not alice)" in evidence

    self_approval = chat.say("/approve looks good to me")
    assert "✘ refused (self_approval)" in self_approval, self_approval
    assert f"thread {thread_id} is still awaiting approval" in self_approval

    finished = chat.say('/approve --as bob "evaluation and fairness reviewed"', timeout=180)
    assert "✔ allowed deploy_model: approved" in finished, finished
    assert "↳ deploy_model ok" in finished
    assert f"done · thread {thread_id}" in finished
    assert "## Plan" not in finished and "Verification" not in finished  # collapsed to the Summary

    full = chat.say("/report")
    for section in ("Plan", "Design", "Changes", "Verification", "Rollback", "Summary"):
        assert re.search(rf"^\s*{section}\s*$", full, re.MULTILINE), (section, full)
    assert chat.leave("/quit") == 0

    approvals = [
        (r["event"], r.get("approver"), r.get("reason_code"))
        for r in _audit(ws)
        if r.get("thread_id") == thread_id and r["event"] in {"approval", "approval_refused"}
    ]
    assert approvals == [("approval_refused", "alice", "self_approval"), ("approval", "bob", "allowed")]

    again = Chat(ws, "--thread", thread_id)
    resumed = again.expect(PROMPT)
    assert f"{thread_id} (resumed)" in resumed
    assert f"thread {thread_id}: done" in resumed
    assert "last request: lifecycle" in resumed
    assert again.leave("ctrl-d") == 0


def test_missing_inputs_are_asked_one_at_a_time(ws: Path, tmp_path: Path) -> None:
    """A lifecycle request without a data source gets exactly that question, a refused answer is shown and asked
    again, and the completed request runs; one lacking approvers gets that question, and dropping it records nothing."""
    frame = tmp_path / "small.csv"
    _adult_slice(300).to_csv(frame, index=False)
    chat = Chat(ws, user="bob")  # bob is the only approver: nobody may approve his production request
    chat.expect(PROMPT)

    chat.child.sendline("lifecycle through data target=class task=classification model=chat-model")
    asked = chat.expect("Where is the data? (a CSV or Parquet path, or sklearn:NAME) ")
    assert "1 input(s) missing" in asked, asked
    chat.child.sendline(str(tmp_path / "nowhere.csv"))
    again = chat.expect("Where is the data? (a CSV or Parquet path, or sklearn:NAME) ")
    assert "not accepted:" in again and "nowhere.csv does not exist" in again, again
    ran = chat.say(str(frame), timeout=120)
    assert "→ data: call validate_dataset" in ran and "↳ split_dataset ok" in ran, ran
    assert "done · thread" in ran
    assert "Which column" not in chat.screen and "What kind of model" not in chat.screen  # never what it has

    requests_before = sum(1 for r in _audit(ws) if r["event"] == "request")
    spec = small_spec(tmp_path, _adult_slice(), data__sensitive_features=["sex"])
    chat.child.sendline(
        f"lifecycle {spec} through deploy use_case='rank offers' sensitivity=internal serving_target=local "
        "latency_p95_ms=200"
    )
    question = "Who approves production? The policy in force lists only you (bob)"
    asked = chat.expect(question)
    assert "1 input(s) missing" in asked
    chat.child.sendline("alice")
    chat.expect("not accepted: alice is not an approver in the policy in force")
    chat.expect("Who approves production? (names the policy in force lists as approvers, other than you) ")
    chat.child.send("car")
    chat.expect("car")  # echoed: the prompt is reading
    chat.child.sendcontrol("c")
    dropped = chat.expect(PROMPT)
    assert "request dropped; nothing was recorded" in dropped
    assert sum(1 for r in _audit(ws) if r["event"] == "request") == requests_before
    assert chat.leave() == 0


def test_help_history_ctrl_c_and_errors(ws: Path, tmp_path: Path) -> None:
    """`help` prints the grammar plainly; a secret typed at the prompt is kept nowhere; Ctrl-C stops a turn and the
    thread takes the next request; Ctrl-C at the prompt clears the line; an unknown command gets one line."""
    spec = small_spec(tmp_path, _adult_slice(), data__sensitive_features=["sex"])
    chat = Chat(ws)
    chat.expect(PROMPT)

    grammar = chat.say("help")
    assert "Commands the offline planner understands" in grammar and "promote MODEL version N" in grammar
    assert "· thread" not in grammar and "Summary" not in grammar  # the grammar, not a report about it

    unknown = chat.say("/frobnicate")
    assert "error: unknown command /frobnicate; allowed: /help, /status, /approve" in unknown
    bad = chat.say("teleport the model")
    assert "error: the offline planner does not understand 'teleport the model'" in bad

    scanned = chat.say(f"scan my token {SECRET} please")
    assert "↳ scan_prompt_injection" in scanned
    assert SECRET not in chat.screen.replace(f"scan my token {SECRET}", "")  # only the echo of what was typed

    chat.child.sendline(f"validate {spec} then scan pii {spec} then version {spec} then split {spec}")
    chat.expect("⚙ validate_dataset")
    chat.child.sendcontrol("c")
    chat.expect("stopping after the step in progress")
    stopped = chat.expect(PROMPT, timeout=120)
    assert "stopped: the turn was interrupted" in stopped, stopped
    assert "split_dataset" not in stopped  # the later steps never started
    after = chat.say("verify audit")
    assert "↳ verify_audit_chain ok" in after and "done · thread" in after, after

    chat.child.send("half a line")
    chat.expect("half a line")  # echoed: the prompt is reading
    chat.child.sendcontrol("c")
    chat.expect(PROMPT)
    status = chat.say("/status")
    assert ": done" in status and "half a line" not in status
    assert chat.leave("ctrl-d") == 0

    events = _audit(ws)
    assert [r["event"] for r in events].count("interrupted") == 1
    history = ws / "chat_history"
    assert oct(history.stat().st_mode & 0o777) == "0o600"
    kept = history.read_text("utf-8")
    assert "verify audit" in kept and "scan my token" in kept
    assert SECRET not in kept
    assert SECRET not in (ws / "audit.jsonl").read_text("utf-8")


def test_an_openai_model_streams_its_answer(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `--model openai:...` against a loopback chat-completions server, the answer streams into the chat a
    sentence at a time, redacted: a key the model streams in pieces is never shown, not even in part."""
    key = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f"  # made up
    with OpenAIStub() as stub:
        stub.push(
            Reply.route_to("security", task="check the audit chain"),
            Reply.tools(("verify_audit_chain", {})),
            Reply.text(f"The audit chain is intact. The key {key} must not leak.\nNothing else to do.", chunk_chars=5),
            Reply.route_to("finish", answer="The audit chain is intact."),
        )
        chat = Chat(
            ws,
            "--model",
            "openai:gpt-test",
            env={
                "OPENAI_BASE_URL": stub.url,
                "OPENAI_API_KEY": "sk-test-not-a-real-key",
                "MLOPS_ALLOW_MODEL_REQUESTS": "1",
            },
        )
        chat.expect(PROMPT)
        turn = chat.say("is the audit chain intact?", timeout=120)
        assert chat.leave() == 0
    assert "→ security: check the audit chain" in turn, turn
    assert "↳ verify_audit_chain ok" in turn
    assert "The audit chain is intact. The key <" in turn and "> must not leak." in turn
    assert "Nothing else to do." in turn
    assert "done · thread" in turn
    for piece in (key, key[:12], key[-10:]):
        assert piece not in chat.screen
    streamed = [r for r in stub.requests if r.stream]
    assert streamed, [json.dumps(r.body)[:200] for r in stub.requests]


def test_stream_yields_typed_events_and_approving_streams_the_rest(workspace: Path, keys: KeyRing) -> None:
    """`stream` yields the route, the proposed call, the decision and the pause as typed events, then the result;
    a refused approver gets only the refusal; a listed approver's `stream_approve` streams the rest of the run."""
    from mlops_supervisor import Supervisor
    from mlops_supervisor._events import ApprovalRequired, PolicyDecided, Routed, ToolFinished, ToolProposed
    from mlops_supervisor._results import RunResult

    held = {"required_for": ["show_policy"]}
    install_policy(workspace, keys.policy(approvers=["bob"], people=["alice"], approval=held), admin="bob", keys=keys)
    ws = workspace
    with Supervisor(ws, user="alice") as sup:
        events = list(sup.stream("show policy"))
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["Routed", "ToolProposed", "PolicyDecided", "ApprovalRequired", "RunResult"], kinds
        routed, proposed, decided, paused, result = events
        assert isinstance(routed, Routed) and routed.agent == "security"
        assert isinstance(proposed, ToolProposed) and proposed.tool == "show_policy"
        assert isinstance(decided, PolicyDecided) and decided.decision == "needs_approval"
        assert isinstance(paused, ApprovalRequired) and (paused.tool, paused.requester) == ("show_policy", "alice")
        assert paused.approvers == ["bob"]
        assert isinstance(result, RunResult) and result.status == "awaiting_approval"

        refused = list(sup.stream_approve(result.thread_id))
        assert len(refused) == 1 and isinstance(refused[0], RunResult) and refused[0].status == "refused"
        assert refused[0].decisions[-1].reason_code == "self_approval"

        rest = list(sup.stream_approve(result.thread_id, approver="bob", reason="fine"))
        assert [type(e).__name__ for e in rest] == ["PolicyDecided", "ToolFinished", "AgentReported", "RunResult"]
        assert isinstance(rest[0], PolicyDecided) and rest[0].decision == "allow"
        assert isinstance(rest[1], ToolFinished) and rest[1].outcome == "ok"
        assert isinstance(rest[3], RunResult) and rest[3].status == "done"


def test_streamed_text_is_let_go_a_sentence_at_a_time_redacted() -> None:
    """Model text streamed in pieces is held until its sentence ends: a key split across chunks is never shown."""
    from langchain_core.messages import AIMessageChunk

    from mlops_supervisor._events import Tokens, events_of
    from mlops_supervisor.policies.pii import PresidioRedactor

    key = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0f"  # made up
    text = f"First sentence. The key {key} is here.\nLast line without an end"
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
    chunks = [("messages", (AIMessageChunk(content=p), {"langgraph_node": "security"})) for p in pieces]
    tokens = [e for e in events_of(iter(chunks), redact=PresidioRedactor().redact_text, thread_id="t-x")]
    assert all(isinstance(t, Tokens) and t.node == "security" for t in tokens)
    shown = [t.text for t in tokens if isinstance(t, Tokens)]
    assert shown[0] == "First sentence."
    assert "".join(shown).endswith("Last line without an end")
    assert all(key[:10] not in s and key[-8:] not in s for s in shown), shown
    assert len(shown) >= 3  # not one blob at the end
