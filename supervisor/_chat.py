"""The terminal chat (``mlops-supervisor chat``): a request at a time, the work shown as it happens.

Each turn streams the supervisor's events (``Supervisor.stream``): the specialist chosen, each
proposed call with its redacted arguments, each gate decision (allowed in green, denied in red
with what would satisfy it, held for approval in yellow), each tool's outcome, model text a
sentence at a time, and the report's Summary at the end (``/report`` shows all six sections).
A paused thread shows the evidence to be approved and who may approve; ``/approve`` and
``/reject`` answer it from here, signed with the approver's key.

Ctrl-C during a turn stops it at the next step (the step in progress finishes and is recorded;
a second Ctrl-C stops at once); the audit log gets an ``interrupted`` line and the next request
on the thread starts afresh. Ctrl-C at the prompt clears the line; Ctrl-D leaves.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markdown import Markdown
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mlops_supervisor._events import (
    AgentReported,
    ApprovalRequired,
    PolicyDecided,
    Quarantined,
    Routed,
    Tokens,
    ToolFinished,
    ToolProposed,
)
from mlops_supervisor._planner import GRAMMAR_HELP, is_help
from mlops_supervisor._requirements import MissingInput, MissingInputsError, with_answer
from mlops_supervisor._results import RunResult, escape_placeholders
from mlops_supervisor.policies import MlopsSupervisorError, UsageError

if TYPE_CHECKING:
    from mlops_supervisor._api import Supervisor

__all__ = ["HISTORY_FILE", "SLASH_COMMANDS", "ChatSession"]

HISTORY_FILE = "chat_history"
"""The prompt's history in the workspace (mode 0600): every line redacted before it is kept."""

SLASH_COMMANDS: dict[str, str] = {
    "/help": "this list",
    "/status": "where the thread stands: done, refused, awaiting approval (and of what)",
    "/approve": "/approve [--as NAME] [--key PATH] [REASON]: approve the paused action, signed with NAME's key",
    "/reject": "/reject --reason TEXT [--as NAME] [--key PATH]: reject it; the reason is recorded",
    "/thread": "the thread id, to come back with --thread ID or to approve from another terminal",
    "/history": "this thread's requests and answers, and the last full report",
    "/report": "the last report with all six sections",
    "/quit": "leave (a paused thread stays paused: `mlops-supervisor approve THREAD` from anywhere)",
}

_DECISION_STYLE = {"allow": "green", "deny": "red", "needs_approval": "yellow"}
_STATUS_STYLE = {
    "done": "green",
    "refused": "red",
    "failed": "red",
    "invalid_input": "red",
    "awaiting_approval": "yellow",
}


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _args_text(args: dict[str, Any]) -> str:
    return json.dumps(args, separators=(", ", ": "), default=str) if args else "{}"


@dataclass
class _Stop:
    """Set by the first Ctrl-C of a turn: stop at the next step."""

    requested: bool = False


class ChatSession:
    """One interactive session over a ``Supervisor``, on one thread (``--thread`` resumes one).

    Answers (model text, the grammar, summaries, reports) go to ``console``; the work as it happens
    (header, specialists, calls, decisions, outcomes, approvals, errors) to ``work`` (stderr from
    the CLI), so ``chat < requests > answers`` keeps the answers apart. In a terminal both show.
    """

    def __init__(
        self,
        sup: Supervisor,
        *,
        console: Console,
        work: Console | None = None,
        thread_id: str | None = None,
        read_line: Callable[[str], str] = input,
    ) -> None:
        self.sup = sup
        self.console = console
        self.work = work or console
        self.thread_id = thread_id or f"t-{uuid.uuid4().hex[:12]}"
        self.resumed = thread_id is not None and thread_id in sup.thread_ids()
        self.last: RunResult | None = None
        self._read = read_line
        self._history = sup.workspace.root / HISTORY_FILE
        self._readline: Any = None

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        """Read requests until /quit, 'exit' or Ctrl-D; the exit code (0)."""
        self._setup_readline()
        self._header()
        if self.resumed:
            self._where_it_stands()
        while True:
            try:
                line = self._read("you> ").strip()
            except EOFError:
                self.console.print()
                break
            except KeyboardInterrupt:  # at the prompt: clear the line
                self.console.print()
                continue
            if not line:
                continue
            self._remember(line)
            if line.lower() in {"exit", "quit", "/quit", "/exit"}:
                break
            try:
                if line.startswith("/"):
                    self._slash(line)
                else:
                    self._request(line)
            except MlopsSupervisorError as exc:
                self.work.print(Text(f"error: {_error_line(exc)}", style="red"), highlight=False)
        self.work.print(Text(f"left thread {self.thread_id}", style="dim"))
        return 0

    def _header(self) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("thread", self.thread_id + (" (resumed)" if self.resumed else ""))
        grid.add_row("model", self.sup.model_spec)
        grid.add_row("user", self.sup.user)
        grid.add_row("workspace", str(self.sup.workspace.root))
        hint = "'help' lists the requests the offline planner understands" if self._offline() else "ask in plain words"
        self.work.print(Panel(grid, title="mlops-supervisor chat", expand=False))
        self.work.print(Text(f"{hint}; /help for commands, /quit or Ctrl-D leaves", style="dim"), highlight=False)

    def _offline(self) -> bool:
        return self.sup.model_spec.strip() == "offline"

    # --- history at rest, redacted -----------------------------------------------------------

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # no readline on this platform: plain input() still works
            return
        self._readline = readline
        readline.set_auto_history(False)  # only the redacted line goes in, never the line as typed
        readline.set_history_length(1000)
        if self._history.exists():
            with suppress(OSError):
                readline.read_history_file(str(self._history))

    def _remember(self, line: str) -> None:
        """Keep ``line``, redacted, in the session's and the workspace's history (0600)."""
        redacted = self.sup.redactor.redact_text(line)
        if self._readline is not None:
            self._readline.add_history(redacted)
        fd = os.open(self._history, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (redacted.replace("\n", " ") + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    # --- requests ----------------------------------------------------------------------------

    def _request(self, line: str) -> None:
        if self._offline() and is_help(line):
            # the grammar itself, not a report about it
            self.console.print(Text(GRAMMAR_HELP), highlight=False)
            return
        while True:
            try:
                events = self.sup.stream(line, thread_id=self.thread_id)
                self._turn(events)
                return
            except MissingInputsError as exc:
                completed = self._ask_missing(line, exc.missing)
                if completed is None:
                    self.console.print(Text("request dropped; nothing was recorded", style="dim"))
                    return
                line = completed

    def _ask_missing(self, request: str, missing: list[MissingInput]) -> str | None:
        """``request`` with each missing input asked for, one question at a time; None when given up."""
        self.console.print(
            Text(f"{len(missing)} input(s) missing before anything runs; answer each (Ctrl-C drops the request)")
        )
        while missing:
            item = missing[0]
            if item.problem:
                self.console.print(Text(f"not accepted: {item.problem}", style="red"))
            try:
                answer = self._read(f"{item.question} ").strip()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return None
            self._remember(answer)
            if not answer:
                continue
            request = with_answer(request, item.key, answer)
            missing = self.sup.missing_inputs(request)
        return request

    def _turn(self, events: Iterator[Any]) -> None:
        """Show a stream's events as they come; Ctrl-C stops it at the next step."""
        stop = _Stop()
        self._awaiting = None
        with _first_interrupt_stops(stop):
            try:
                for event in events:
                    if isinstance(event, RunResult):
                        self._finish_tokens()
                        if self._awaiting is not None:  # read now: the pause is stored once the stream has ended
                            self._show_approval(
                                self._awaiting.thread_id, self._awaiting.approvers, self._awaiting.requester
                            )
                        self._show_result(event)
                        return
                    self._show(event)
                    if stop.requested:
                        break
            except KeyboardInterrupt:
                stop.requested = True
            finally:
                if stop.requested:
                    close = getattr(events, "close", None)
                    if close is not None:
                        close()
        self._finish_tokens()
        self.work.print(
            Text(
                f"stopped: the turn was interrupted; the steps taken are recorded and the audit log has an "
                f"'interrupted' line for {self.thread_id}. The next request on this thread starts afresh.",
                style="yellow",
            )
        )

    # --- events ------------------------------------------------------------------------------

    _tokens_open = False
    _awaiting: ApprovalRequired | None = None

    def _finish_tokens(self) -> None:
        if self._tokens_open:
            self.console.print()
            self._tokens_open = False

    def _show(self, event: Any) -> None:
        if isinstance(event, Tokens):
            self.console.print(Text(event.text), end="", highlight=False)
            self._tokens_open = not event.text.endswith("\n")
            return
        self._finish_tokens()
        line = Text()
        if isinstance(event, Routed):
            line.append("→ ", style="cyan").append(event.agent, style="bold cyan").append(f": {event.task}")
        elif isinstance(event, ToolProposed):
            line.append("  ⚙ ", style="blue").append(event.tool, style="bold").append(f" {_args_text(event.args)}")
        elif isinstance(event, PolicyDecided):
            line = _decision_line(event)
        elif isinstance(event, ToolFinished):
            style = "green" if event.outcome == "ok" else "red"
            code = f" ({event.reason_code})" if event.reason_code else ""
            line.append("  ↳ ", style=style).append(f"{event.tool} {event.outcome}{code}", style=style)
            if event.summary:
                room = max(40, self.work.width - len(line) - 2)  # one line, whatever the terminal's width
                line.append(f": {_one_line(event.summary, room)}", style="dim")
        elif isinstance(event, Quarantined):
            line.append(
                f"  ☣ output of {event.tool} quarantined ({', '.join(event.kinds)}; {event.findings} findings): "
                "withheld from the model",
                style="magenta",
            )
        elif isinstance(event, ApprovalRequired):
            # Its evidence is shown when the turn ends: the thread's pause is not stored until the stream stops.
            self._awaiting = event
            return
        elif isinstance(event, AgentReported):
            return  # the model's own text streamed already; the offline planner's repeats the tool's output
        else:
            return
        self.work.print(line, highlight=False)

    def _show_approval(self, thread_id: str, approvers: list[str], requester: str) -> None:
        """What is to be approved, with its evidence read now, and who may approve."""
        try:
            body: Any = Markdown(self.sup.approval_evidence(thread_id).to_markdown())
        except MlopsSupervisorError as exc:
            body = Text(f"the evidence could not be shown: {exc}", style="red")
        others = [a for a in approvers if a != requester]
        who = ", ".join(others) or "nobody (the policy lists no approver other than the requester)"
        self.work.print(Panel(body, title="awaiting approval", border_style="yellow"))
        self.work.print(
            Text(
                f"may approve: {who} (not {requester}). /approve --as NAME [REASON] or /reject --reason TEXT here, "
                f"or /quit and later: mlops-supervisor approve {thread_id} --as NAME",
                style="yellow",
            ),
            highlight=False,
        )

    def _show_result(self, result: RunResult) -> None:
        self.last = result
        style = _STATUS_STYLE.get(result.status, "white")
        self.console.print(Text(f"{result.status} · thread {result.thread_id}", style=f"bold {style}"))
        self.console.print(Markdown(escape_placeholders(result.report.summary)))
        if result.status != "awaiting_approval":
            self.console.print(Text("/report shows the whole report", style="dim"))

    # --- slash commands ----------------------------------------------------------------------

    def _slash(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{line!r} cannot be read: {exc}; close its quotes") from None
        name, args = words[0].lower(), words[1:]
        handlers: dict[str, Callable[[list[str]], None]] = {
            "/help": lambda _: self._help(),
            "/status": lambda _: self._where_it_stands(),
            "/approve": self._approve,
            "/reject": self._reject,
            "/thread": lambda _: self.console.print(Text(f"thread {self.thread_id}"), highlight=False),
            "/history": lambda _: self._history_view(),
            "/report": lambda _: self._report(),
        }
        handler = handlers.get(name)
        if handler is None:
            raise UsageError(f"unknown command {name}; allowed: {', '.join(SLASH_COMMANDS)}")
        handler(args)

    def _help(self) -> None:
        table = Table.grid(padding=(0, 2))
        for name, text in SLASH_COMMANDS.items():
            table.add_row(Text(name, style="bold"), Text(text))
        self.console.print(table)
        hint = "'help' lists the requests the offline planner understands" if self._offline() else "ask in plain words"
        self.console.print(Text(f"anything else is a request: {hint}", style="dim"))

    def _current(self) -> RunResult | None:
        if self.thread_id not in self.sup.thread_ids():
            return None
        result = self.sup.status(self.thread_id)
        return result if isinstance(result, RunResult) else None

    def _where_it_stands(self) -> None:
        result = self._current()
        if result is None:
            self.console.print(Text(f"thread {self.thread_id}: no request yet"), highlight=False)
            return
        self.last = result
        style = _STATUS_STYLE.get(result.status, "white")
        self.console.print(
            Text(f"thread {self.thread_id}: {result.status}", style=f"bold {style}"),
            Text(f"last request: {result.request}", style="dim"),
            highlight=False,
        )
        if result.status == "awaiting_approval" and result.pending_approval is not None:
            self._show_approval(self.thread_id, list(self.sup.policy.approvers), result.pending_approval.requester)
        else:
            self.console.print(Markdown(escape_placeholders(result.report.summary)))

    def _report(self) -> None:
        result = self.last or self._current()
        if result is None:
            raise UsageError("there is no report yet on this thread; make a request first")
        self.console.print(Markdown(result.to_markdown()))

    def _history_view(self) -> None:
        records = [r for r in self.sup.audit.records() if r.get("thread_id") == self.thread_id]
        shown = {"request", "approval", "approval_refused", "finish", "interrupted"}
        for r in records:
            if r.get("event") not in shown:
                continue
            event = r["event"]
            if event == "request":
                text = f"{r.get('requester')}> {r.get('request')}"
            elif event == "finish":
                text = f"  finished: {r.get('status')}"
            elif event == "interrupted":
                text = "  interrupted"
            else:
                text = f"  {event} by {r.get('approver')}: {r.get('decision')} ({r.get('reason_code')})"
            self.console.print(Text(f"{str(r.get('ts', ''))[:19]}  {text}"), highlight=False)
        if not any(r.get("event") == "request" for r in records):
            self.console.print(Text(f"thread {self.thread_id}: no request yet"), highlight=False)
            return
        self._report()

    def _answer_options(self, args: list[str], *, reason_flag_required: bool) -> tuple[str | None, Path | None, str]:
        who: str | None = None
        key: Path | None = None
        reason: list[str] = []
        i = 0
        while i < len(args):
            word = args[i]
            if word in {"--as", "--key", "--reason"}:
                if i + 1 == len(args):
                    raise UsageError(f"{word} needs a value")
                value = args[i + 1]
                if word == "--as":
                    who = value
                elif word == "--key":
                    key = Path(value).expanduser()
                else:
                    reason.append(value)
                i += 2
                continue
            if word.startswith("--"):
                raise UsageError(f"unknown option {word}; allowed: --as NAME, --key PATH, --reason TEXT")
            reason.append(word)
            i += 1
        text = " ".join(reason)
        if reason_flag_required and not text.strip():
            raise UsageError("a rejection needs a reason: /reject --reason TEXT")
        return who, key, text

    def _approve(self, args: list[str]) -> None:
        who, key, reason = self._answer_options(args, reason_flag_required=False)
        self._answered(self.sup.stream_approve(self.thread_id, reason=reason, approver=who, key=key))

    def _reject(self, args: list[str]) -> None:
        who, key, reason = self._answer_options(args, reason_flag_required=True)
        self._answered(self.sup.stream_reject(self.thread_id, reason=reason, approver=who, key=key))

    def _answered(self, events: Iterator[Any]) -> None:
        first = next(events)  # a refused approver: the refusal, and nothing ran
        if isinstance(first, RunResult) and first.status == "refused" and first.pending_approval is not None:
            refusal = first.decisions[-1]
            self.last = first
            self.work.print(
                Text(f"✘ refused ({refusal.reason_code}): {refusal.message}", style="bold red"), highlight=False
            )
            self.work.print(Text(f"thread {self.thread_id} is still awaiting approval", style="yellow"))
            return
        self._turn(_chain(first, events))


def _error_line(exc: Exception) -> str:
    """An error as one line: the planner's long refusals end with the whole grammar, which 'help' shows."""
    text = str(exc)
    if GRAMMAR_HELP in text:
        text = text.replace(GRAMMAR_HELP, "").strip() + " ('help' lists what it understands)"
    return " ".join(text.split())


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def _decision_line(event: PolicyDecided) -> Text:
    style = _DECISION_STYLE[event.decision]
    line = Text()
    if event.decision == "allow":
        line.append(f"  ✔ allowed {event.action}", style=style)
        if event.message and event.message != "allowed by policy":
            line.append(f": {event.message}", style="dim")
    elif event.decision == "deny":
        line.append(f"  ✘ denied {event.action} ({event.reason_code})", style=f"bold {style}")
        line.append(f": {event.message}", style=style)
    else:
        line.append(f"  ⏸ waiting for approval: {event.action}", style=f"bold {style}")
        line.append(f": {event.message}", style=style)
    return line


@contextmanager
def _first_interrupt_stops(stop: _Stop) -> Iterator[None]:
    """While a turn runs: the first Ctrl-C asks it to stop at the next step, a second stops it at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        os.write(2, b"\nstopping after the step in progress (Ctrl-C again stops at once)\n")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: Ctrl-C keeps its default meaning
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
