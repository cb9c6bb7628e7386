"""``Supervisor``: the library entry point behind the CLI, notebooks and evals."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from langchain_core.messages import HumanMessage
from langgraph.errors import GraphRecursionError
from langgraph.types import Command

from mlops_supervisor._approval_view import ApprovalEvidence, approval_evidence
from mlops_supervisor._events import StreamEvent, events_of
from mlops_supervisor._graph import Runtime, build_graph
from mlops_supervisor._llm import ModelProvider, resolve_model
from mlops_supervisor._logging import close_logging, make_logger
from mlops_supervisor._pipeline import playbook, preflight
from mlops_supervisor._planner import parse_request
from mlops_supervisor._policy_store import apply_policy, approve_policy, resolve_policy
from mlops_supervisor._report import build_report
from mlops_supervisor._requirements import (
    LifecycleCheck,
    LifecycleRequest,
    MissingInput,
    MissingInputsError,
    check_lifecycle,
    parse_lifecycle,
    spec_file_for,
)
from mlops_supervisor._results import (
    DecisionRecord,
    EndpointSummary,
    OutboxSummary,
    PendingApproval,
    Report,
    RunResult,
    Status,
    ThreadSummary,
    ToolOutput,
    WorkspaceStatus,
)
from mlops_supervisor._settings import Settings
from mlops_supervisor._state import ThreadStatus, initial_state
from mlops_supervisor._stores import open_audit, open_checkpoints
from mlops_supervisor._tracing import SupervisorTracing, TracedRun
from mlops_supervisor._usage import usage_result
from mlops_supervisor._workspace import Workspace
from mlops_supervisor.agents import SPECIALISTS
from mlops_supervisor.policies import (
    ApprovalRequest,
    ApprovalResponse,
    Policy,
    PolicyFileError,
    Redactor,
    UnknownThreadError,
    UsageError,
    approval_statement,
    check_answer_signature,
    check_approver,
    redact_value,
    request_statement,
    sign_statement,
)
from mlops_supervisor.policies.identity import default_key_dir, load_private_key
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.tools import ProgressFactory, ToolContext, ToolRegistry, build_tool_registry, no_progress
from mlops_supervisor.tools.core import Chokepoint, default_tracking_uri

__all__ = ["Supervisor", "resolve_policy"]

_THREAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
NODES = ("supervisor", *SPECIALISTS)


def _tool_output(result: dict[str, Any]) -> ToolOutput:
    text = result.get("output", result.get("summary", ""))
    try:
        output: Any = json.loads(text)
    except ValueError:
        output = text
    return ToolOutput(
        agent=result["agent"],
        tool=result["tool"],
        outcome=result["outcome"],
        reason_code=result.get("reason_code", ""),
        output=output,
    )


class Supervisor:
    """A governed supervisor over one workspace.

    ``ask`` runs a request on a thread; a request that needs an approval pauses and can be
    answered with ``approve`` or ``reject``, from this process or another, later.
    """

    def __init__(
        self,
        workspace: str | Path | None = None,
        *,
        model: str | None = None,
        user: str | None = None,
        policy: Path | Policy | None = None,
        settings: Settings | None = None,
        tools: ToolRegistry | None = None,
        redactor: Redactor | None = None,
        progress: ProgressFactory | None = None,
        clock: Callable[[], datetime] | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> None:
        self.settings = settings or Settings()
        root = Path(workspace) if workspace is not None else self.settings.workspace
        # Validate everything before creating anything, so bad input leaves no trace.
        self.workspace = Workspace.open(root, create=False)
        self.user = user or self.settings.user
        self._key = key
        self.model_spec = model or self.settings.model
        self._providers: dict[str, ModelProvider] = {}
        self._provider(self.model_spec)
        # The audit chain first: the policy in force is read from it. A shared PostgreSQL chain (MLOPS_DATABASE_URL)
        # is reached now, so an unreachable server stops this before the workspace is created; the file is
        # only created by the first append.
        self.audit = open_audit(
            self.settings, self.workspace.root, redact=lambda value: redact_value(self.redactor, value)
        )
        try:
            self.policy = resolve_policy(self.workspace, policy, self.settings, audit=self.audit)
        except BaseException:
            self.audit.close()
            raise
        # One redactor on every boundary: Presidio with the secret recognizers and the MLOps allow-list
        # (policies/pii.py); its NLP model loads on the first text that could hold a name, once per process.
        self.redactor: Redactor = redactor or PresidioRedactor()
        self.workspace = Workspace.open(root)
        self.log = make_logger(self.workspace.logs_dir, redactor=self.redactor, console_level=self.settings.log_level)
        # Every graph invocation is an MLflow trace in the workspace's store, redacted span by span (_tracing.py).
        self._tracing = SupervisorTracing(
            workspace=self.workspace.root,
            tracking_uri=self.settings.mlflow_tracking_uri or default_tracking_uri(self.workspace.root),
            redactor=self.redactor,
            log=self.log,
            enabled=self.settings.tracing,
        )
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        hash_key = self.settings.pii_hash_key
        # Every mutating tool runs through this supervisor's chokepoint, acting as its user, whoever
        # built the registry: `sup.tools.get(name).tool.invoke(...)` is decided and audited like `call`.
        self._chokepoint = Chokepoint(policy=self.policy, audit=self.audit, redactor=self.redactor, actor=self.user)
        self._context = ToolContext(
            workspace=self.workspace.root,
            audit=self.audit,
            policy=self.policy,
            redactor=self.redactor,
            tracking_uri=self.settings.mlflow_tracking_uri,
            max_dataset_mb=self.settings.max_dataset_mb,
            n_jobs=self.settings.n_jobs,
            pii_hash_key=hash_key.get_secret_value() if hash_key is not None else None,
            progress=progress or no_progress,
            clock=self.clock,
            egress_allow=tuple(e.strip() for e in self.settings.egress_allow.split(",") if e.strip()),
            slack_webhook_url=slack.get_secret_value() if (slack := self.settings.slack_webhook_url) else None,
            kubeconfig=self.settings.kubeconfig,
            kube_context=self.settings.kube_context,
            prometheus_url=self.settings.prometheus_url,
        )
        registry = tools or build_tool_registry(self._context, actor=self.user)
        self.tools = registry.routed_through(self._chokepoint.call)
        # Threads and their pending approvals: the workspace's SQLite file, or the shared PostgreSQL.
        try:
            self._checkpoints = open_checkpoints(self.settings, self.workspace.checkpoints_path)
        except BaseException:
            self.audit.close()
            raise
        self._graphs: dict[str, Any] = {}

    # --- plumbing ----------------------------------------------------------------------

    def _provider(self, spec: str) -> ModelProvider:
        if spec not in self._providers:
            self._providers[spec] = resolve_model(spec, nodes=NODES, settings=self.settings)
        return self._providers[spec]

    def _graph(self, spec: str) -> Any:
        if spec not in self._graphs:
            runtime = Runtime(
                policy=self.policy,
                audit=self.audit,
                redactor=self.redactor,
                tools=self.tools,
                models=self._provider(spec),
                log=self.log,
                clock=self.clock,
            )
            self._graphs[spec] = build_graph(runtime).compile(checkpointer=self._checkpoints.saver)
        return self._graphs[spec]

    def _config(self, thread_id: str) -> dict[str, Any]:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": self.policy.limits.recursion_limit}

    def _snapshot(self, thread_id: str) -> Any:
        snapshot = self._graph(self.model_spec).get_state(self._config(thread_id))
        return snapshot if snapshot.values else None

    def _require_thread(self, thread_id: str) -> Any:
        snapshot = self._snapshot(thread_id)
        if snapshot is None:
            known = ", ".join(self.thread_ids()[-10:]) or "none yet"
            raise UnknownThreadError(
                f"no thread {thread_id!r} in workspace {self.workspace.root}; known threads: {known}"
            )
        return snapshot

    def _result(self, thread_id: str, *, traced: TracedRun | None = None, traces: bool = True) -> RunResult:
        """The thread's result as it stands, with its traces (``traced``: the run that just ended); ``traces=False``
        leaves out the trace ids, which cost a search of the tracking store, where nobody reads them."""
        snapshot = self._require_thread(thread_id)
        values = snapshot.values
        awaiting = bool(snapshot.interrupts)
        stored: ThreadStatus = values.get("status", "failed")
        # a thread that never reached the finish node (still "running") failed
        status: Status = "awaiting_approval" if awaiting else "failed" if stored == "running" else stored
        report = values.get("report") or build_report(
            {**values, "failure": values.get("failure") or ("" if awaiting else "the request did not finish")},
            status=status,
            design=f"Model `{values.get('model')}`; policy {self.policy.source}.",
            audit_path=self.audit.location,
        )
        pending = None
        if awaiting:
            request = ApprovalRequest.model_validate(values["pending"][0])
            pending = PendingApproval(
                tool=request.tool,
                agent=request.agent,
                args=request.args,
                requester=request.requester,
                binding=request.binding,
                expires_at=request.expires_at.isoformat(),
                approve_command=f"mlops-supervisor approve {thread_id} --as APPROVER",
                reject_command=f"mlops-supervisor reject {thread_id} --as APPROVER --reason TEXT",
            )
        result = RunResult(
            status=status,
            thread_id=thread_id,
            report=Report(**report),
            decisions=[DecisionRecord.model_validate(d) for d in values.get("decisions", [])],
            outputs=[_tool_output(r) for r in values.get("tool_results", [])],
            pending_approval=pending,
            requester=values.get("requester", ""),
            request=values.get("request", ""),
            audit_log=self.audit.location,
            usage=usage_result(values.get("usage")),
        )
        if not traces:
            return result
        annotated: RunResult = self._tracing.annotate(result, traced)
        return annotated

    def _invoke(self, spec: str, payload: Any, thread_id: str) -> RunResult:
        with self._tracing.invocation(payload, thread_id=thread_id, actor=self.user) as traced:
            try:
                self._graph(spec).invoke(payload, traced.config(self._config(thread_id)))
            except GraphRecursionError:
                self.audit.append("failure", thread_id=thread_id, reason="recursion_limit")
                raise UsageError(
                    f"thread {thread_id} hit the recursion limit ({self.policy.limits.recursion_limit}, "
                    "limits.recursion_limit in the policy)"
                ) from None
            traced.finish(self._result(thread_id, traces=False))
        return self._result(thread_id, traced=traced)

    # --- public API --------------------------------------------------------------------

    def thread_ids(self) -> list[str]:
        """Every thread in the workspace (in the shared database, when one is configured), oldest first."""
        return self._checkpoints.thread_ids()

    def _start(
        self, request: str, thread_id: str | None, *, mode: str, commands: list[dict[str, Any]] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """A new request's thread id and state, audited; ``commands`` default to the planner's reading of it."""
        if not request.strip():
            raise UsageError("the request is empty; say what to do, or 'help'")
        if thread_id is None:
            thread_id = f"t-{uuid.uuid4().hex[:12]}"
        elif not _THREAD_ID.match(thread_id):
            raise UsageError(f"thread id {thread_id!r} is not allowed; use 1-64 letters, digits, '.', '_' or '-'")
        text = self.redactor.redact_text(request)
        model = self.model_spec
        # a lifecycle request runs a spec's playbook, checked for missing inputs before anything is read or recorded
        lifecycle = self._lifecycle_check(text) if commands is None and mode == "ask" else None
        if lifecycle is not None and lifecycle.missing:
            raise MissingInputsError(lifecycle.missing)
        existing = self._snapshot(thread_id)
        if existing is not None and existing.interrupts:
            raise UsageError(
                f"thread {thread_id} is awaiting approval; answer it with approve or reject before asking again"
            )
        if lifecycle is not None:
            commands, mode, model = self._lifecycle_playbook(lifecycle), "pipeline", "offline"
        if commands is None:  # parsed before anything is recorded: a request it refuses leaves no line
            commands = self._commands(text)
        transcript = [*(existing.values.get("transcript", []) if existing else []), HumanMessage(text)]
        key = self.signing_key(self.user)
        signed = (
            sign_statement(
                key,
                self.user,
                request_statement(thread_id=thread_id, requester=self.user, request=text, at=self.clock()),
            )
            if key is not None
            else None
        )
        state = initial_state(
            thread_id=thread_id,
            requester=self.user,
            request_signed=signed.model_dump() if signed else None,
            request=text,
            model=model,
            transcript=transcript,
            mode="pipeline" if mode == "pipeline" else "ask",
            commands=commands,
        )
        self.audit.append(
            "request",
            thread_id=thread_id,
            requester=self.user,
            request=text,
            model=self.model_spec,
            policy=self.policy.source,
            policy_sha256=self.policy.digest,
            signed_by=signed.key if signed else None,
        )
        return thread_id, dict(state)

    def signing_key(self, name: str, key: str | Path | Ed25519PrivateKey | None = None) -> Ed25519PrivateKey | None:
        """``name``'s private key: the one given, else (for this supervisor's user) the one it was built with or
        ``MLOPS_KEY``, else ``<key dir>/<name>`` when it exists; None when there is none."""
        if isinstance(key, Ed25519PrivateKey):
            return key
        if key is None and name == self.user:
            key = self._key if self._key is not None else self.settings.key
        if isinstance(key, Ed25519PrivateKey):
            return key
        if key is not None:
            return load_private_key(Path(key))
        default = default_key_dir() / name
        return load_private_key(default) if default.exists() else None

    def _commands(self, redacted: str) -> list[dict[str, Any]]:
        """The offline planner's commands, parsed from the redacted request: they are kept in the checkpoint."""
        if not self._provider(self.model_spec).offline:
            return []
        return [{"agent": c.agent, "tool": c.tool, "text": c.text, "args": c.args} for c in parse_request(redacted)]

    def ask(self, request: str, *, thread_id: str | None = None) -> RunResult:
        """Run one request to its end, or until it pauses for an approval.

        A lifecycle request (``lifecycle [SPEC] [through STAGE] [key=value ...]``) lacking an input its stages
        need raises ``MissingInputsError`` listing them, before anything is recorded (``missing_inputs``).
        """
        thread_id, state = self._start(request, thread_id, mode="ask")
        return self._invoke(state["model"], state, thread_id)

    def missing_inputs(self, request: str, *, stop_after: str | None = None) -> list[MissingInput]:
        """What a lifecycle request still needs for its stages (up to ``stop_after``, default the request's own
        ``through``, else monitor), each with its question; ``[]`` when nothing is missing or the request is not
        a lifecycle request. Nothing is recorded; a bad spec or a malformed request raises ``UsageError``."""
        check = self._lifecycle_check(self.redactor.redact_text(request), stop_after)
        return check.missing if check is not None else []

    def _lifecycle_check(self, redacted: str, stop_after: str | None = None) -> LifecycleCheck | None:
        parsed = parse_lifecycle(redacted)
        if parsed is None:
            return None
        return self._check_inputs(parsed, stop_after)

    def _check_inputs(self, parsed: LifecycleRequest, stop_after: str | None) -> LifecycleCheck:
        from mlops_supervisor.tools.core import default_tracking_uri

        loaded = preflight(parsed.spec, self.policy) if parsed.spec is not None else None
        return check_lifecycle(
            parsed,
            policy=self.policy,
            requester=self.user,
            tracking_uri=self.settings.mlflow_tracking_uri
            or f"{default_tracking_uri(self.workspace.root)} (the workspace's embedded store)",
            through=stop_after,
            loaded=loaded,
        )

    def _lifecycle_playbook(self, check: LifecycleCheck) -> list[dict[str, Any]]:
        """The playbook of a complete lifecycle request, its spec written first into ``<workspace>/specs`` when
        the request names none."""
        loaded = check.loaded
        if loaded is None:
            from mlops_supervisor.tools.core import write_atomic

            assert check.new_spec is not None
            path, text = spec_file_for(check.new_spec, self.workspace.root / "specs")
            if not path.exists():
                write_atomic(path, text)
            loaded = preflight(path, self.policy)
            check.objective.insert(
                1,
                f"**Spec**: written from the answers to `{path}`; candidates "
                + ", ".join(f"`{c.estimator}`" for c in loaded.spec.training.candidates)
                + " (from the policy's allow-list for the task), metric "
                + f"`{loaded.spec.training.metric}`.",
            )
        return playbook(loaded, check.through, objective=self._redacted_lines(check.objective))

    def _redacted_lines(self, lines: list[str]) -> list[str]:
        return [self.redactor.redact_text(line) for line in lines]

    def stream(self, request: str, *, thread_id: str | None = None) -> Iterator[StreamEvent | RunResult]:
        """Like ``ask``, yielding typed events (``mlops_supervisor._events``) as the graph runs, then the
        ``RunResult``: the specialist chosen, each proposed call, each decision, each tool's outcome, a
        pause for approval, and model text as it streams.

        Model text comes a sentence (or line) at a time, not token by token: the chunks a model
        streams are raw, and a secret or a name split across chunks could only be recognised
        whole, so each sentence is held back until it ends and redacted before it is yielded.
        """
        thread_id, state = self._start(request, thread_id, mode="ask")
        yield from self._stream_run(state["model"], state, thread_id)

    def _stream_run(self, spec: str, payload: Any, thread_id: str) -> Iterator[StreamEvent | RunResult]:
        """Run ``payload`` on ``thread_id`` like ``_invoke`` (traced the same way), yielding the events, then the
        ``RunResult``."""
        before = self._snapshot(thread_id) if payload is None or isinstance(payload, Command) else None
        values = before.values if before is not None else {}
        with self._tracing.invocation(payload, thread_id=thread_id, actor=self.user) as traced:
            chunks = self._graph(spec).stream(
                payload, traced.config(self._config(thread_id)), stream_mode=["updates", "messages"]
            )
            # The offline planner is no language model: its "tokens" are the tool outputs, reported already.
            if self._provider(spec).offline:
                chunks = (c for c in chunks if c[0] != "messages")
            try:
                yield from events_of(
                    chunks,
                    redact=self.redactor.redact_text,
                    thread_id=thread_id,
                    approvers=list(self.policy.approvers),
                    decisions_before=len(values.get("decisions", [])),
                    results_before=len(values.get("tool_results", [])),
                    pending_before=values.get("pending", []),
                )
            except GraphRecursionError:
                self.audit.append("failure", thread_id=thread_id, reason="recursion_limit")
                raise UsageError(
                    f"thread {thread_id} hit the recursion limit ({self.policy.limits.recursion_limit}, "
                    "limits.recursion_limit in the policy)"
                ) from None
            except (KeyboardInterrupt, GeneratorExit):
                # Stopped part-way (Ctrl-C, or the consumer stopped reading): the steps already taken stay
                # checkpointed and audited; this line says the run went no further. `resume` continues it.
                self.audit.append("interrupted", thread_id=thread_id, by=self.user)
                raise
            traced.finish(self._result(thread_id, traces=False))
        yield self._result(thread_id, traced=traced)

    def run_commands(self, request: str, commands: list[dict[str, Any]], *, thread_id: str | None = None) -> RunResult:
        """Run a fixed playbook of commands (``agent``, ``tool``, ``text``) as a pipeline."""
        thread_id, state = self._start(request, thread_id, mode="pipeline", commands=commands)
        return self._invoke("offline", state, thread_id)

    def run_pipeline(self, spec: str | Path, *, stop_after: str = "monitor", thread_id: str | None = None) -> RunResult:
        """Run the stages of a pipeline spec up to ``stop_after`` (data, train, evaluate, ...).

        The spec is checked first (``InvalidInputError`` before anything runs), then the inputs the stages
        need (``MissingInputsError`` listing what the spec, the policy and the settings leave open); each
        stage is a tool call its specialist makes through the policy node, like any other request.
        """
        loaded = preflight(spec, self.policy)
        check = self._check_inputs(LifecycleRequest(spec=str(loaded.path)), stop_after)
        if check.missing:
            raise MissingInputsError(check.missing)
        commands = playbook(loaded, stop_after, objective=self._redacted_lines(check.objective))
        return self.run_commands(f"run {loaded.path} --stop-after {stop_after}", commands, thread_id=thread_id)

    def _answer(
        self,
        thread_id: str,
        decision: str,
        reason: str,
        approver: str | None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult:
        answered = self._answer_command(thread_id, decision, reason, approver, key)
        return answered if isinstance(answered, RunResult) else self._invoke(*answered, thread_id)

    def _answer_command(
        self,
        thread_id: str,
        decision: str,
        reason: str,
        approver: str | None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult | tuple[str, Command[Any]]:
        """The signed answer as the command that resumes the thread (with the model spec to run it), or,
        when the approver is refused, the thread's result with the refusal (the thread stays paused)."""
        if decision == "reject" and not reason.strip():
            raise UsageError("a rejection needs a reason (--reason TEXT)")
        snapshot = self._require_thread(thread_id)
        if not snapshot.interrupts:
            raise UsageError(
                f"thread {thread_id} is not awaiting approval (status: {snapshot.values.get('status')}); nothing to {decision}"
            )
        who = approver or self.user
        request = ApprovalRequest.model_validate(snapshot.values["pending"][0])
        refused = check_approver(request, who, self.policy)
        answer: dict[str, Any] = {}
        if refused is None:
            private = self._required_key(who, key)
            signed = sign_statement(private, who, approval_statement(request, decision=decision, approver=who))
            answer = {
                "decision": decision,
                "approver": who,
                "binding": request.binding,
                "reason": self.redactor.redact_text(reason),
                "signed": signed.model_dump(),
            }
            refused = check_answer_signature(request, ApprovalResponse.model_validate(answer), self.policy)
        if refused is not None:
            # The thread stays paused: a refused approver must not consume the request.
            self.audit.append(
                "approval_refused",
                thread_id=thread_id,
                requester=request.requester,
                approver=who,
                binding=request.binding,
                agent=request.agent,
                **refused.as_record(),
            )
            result = self._result(thread_id)
            return result.model_copy(
                update={
                    "status": "refused",
                    "decisions": [*result.decisions, DecisionRecord(agent=request.agent, **refused.as_record())],
                    "report": result.report.model_copy(
                        update={"summary": f"Refused: {refused.message}. The thread is still awaiting approval."}
                    ),
                }
            )
        spec = snapshot.values.get("model") or self.model_spec
        return spec, Command(resume=answer)

    def approve(
        self,
        thread_id: str,
        *,
        reason: str = "",
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult:
        """Approve the action a thread waits on, as ``approver`` (default: this supervisor's user), signed with
        their key (``key``, else their key file: see ``signing_key``)."""
        return self._answer(thread_id, "approve", reason, approver, key)

    def reject(
        self,
        thread_id: str,
        *,
        reason: str,
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult:
        """Reject the action a thread waits on; ``reason`` is recorded, the answer signed like an approval."""
        return self._answer(thread_id, "reject", reason, approver, key)

    def stream_approve(
        self,
        thread_id: str,
        *,
        reason: str = "",
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> Iterator[StreamEvent | RunResult]:
        """``approve``, yielding the events of the rest of the run as ``stream`` does, then the ``RunResult``
        (status ``refused``, and nothing before it, when the approver is refused: the thread stays paused)."""
        yield from self._stream_answer(thread_id, "approve", reason, approver, key)

    def stream_reject(
        self,
        thread_id: str,
        *,
        reason: str,
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> Iterator[StreamEvent | RunResult]:
        """``reject``, yielding the events of the rest of the run, then the ``RunResult``."""
        yield from self._stream_answer(thread_id, "reject", reason, approver, key)

    def _stream_answer(
        self,
        thread_id: str,
        decision: str,
        reason: str,
        approver: str | None,
        key: str | Path | Ed25519PrivateKey | None,
    ) -> Iterator[StreamEvent | RunResult]:
        answered = self._answer_command(thread_id, decision, reason, approver, key)
        if isinstance(answered, RunResult):
            yield answered
        else:
            yield from self._stream_run(*answered, thread_id)

    def approval_evidence(self, thread_id: str) -> ApprovalEvidence:
        """What the paused thread ``thread_id`` asks to be approved, with its evidence read now from the store:
        the model version and action, evaluation metrics against thresholds, fairness, the canary result,
        the diff against the champion, the evidence digest and who may approve. ``UsageError`` when the
        thread is not awaiting approval."""
        snapshot = self._require_thread(thread_id)
        if not snapshot.interrupts or not snapshot.values.get("pending"):
            raise UsageError(
                f"thread {thread_id} is not awaiting approval (status: {snapshot.values.get('status')}); "
                "there is nothing to look at"
            )
        request = ApprovalRequest.model_validate(snapshot.values["pending"][0])
        store = self.settings.mlflow_tracking_uri or default_tracking_uri(self.workspace.root)
        return approval_evidence(request, self.policy, store)

    def resume(self, thread_id: str) -> RunResult:
        """Continue a thread that stopped part-way (a crash); a finished thread is reported as it is."""
        snapshot = self._require_thread(thread_id)
        if snapshot.interrupts:
            return self._result(thread_id)
        if snapshot.next:
            spec = snapshot.values.get("model") or self.model_spec
            return self._invoke(spec, None, thread_id)
        return self._result(thread_id)

    def status(self, thread_id: str | None = None) -> RunResult | WorkspaceStatus:
        """One thread's result, or the whole workspace's threads and audit state."""
        if thread_id is not None:
            return self._result(thread_id)
        threads = []
        for tid in self.thread_ids():
            result = self._result(tid, traces=False)  # a listing: the trace ids of each thread are not shown
            threads.append(
                ThreadSummary(thread_id=tid, status=result.status, requester=result.requester, request=result.request)
            )
        check = self.audit.verify()
        waiting = [t for t in threads if t.status == "awaiting_approval"]
        endpoints = self.endpoints()
        down = [f"{e.model} {p}" for e in endpoints for p in e.down]
        stray = sum(len(e.stray) for e in endpoints)
        from mlops_supervisor.tools.monitoring import outbox_entries, outbox_path

        outbox = OutboxSummary.of(outbox_entries(self.workspace.root), str(outbox_path(self.workspace.root)))
        return WorkspaceStatus(
            workspace=str(self.workspace.root),
            threads=threads,
            audit_intact=check.ok,
            audit_lines=check.lines,
            endpoints=endpoints,
            outbox=outbox,
            report=Report(
                summary=f"{len(threads)} thread(s), {len(waiting)} awaiting approval; audit chain "
                + ("intact" if check.ok else f"broken at line {check.bad_line}: {check.problem}")
                + f"; {len(endpoints)} endpoint(s)"
                + (f"; {outbox.count} alert notification(s) in the outbox" if outbox.count else "")
                + (
                    f", not running: {', '.join(down)} (`mlops-supervisor up` restarts them, "
                    "`mlops-supervisor down` stops the rest)"
                    if down
                    else ""
                )
                + (
                    f"; {stray} stray server process(es) that no route uses (a command stopped while starting "
                    "them; `mlops-supervisor down` stops them)"
                    if stray
                    else ""
                )
            ),
        )

    def endpoints(self) -> list[EndpointSummary]:
        """Each endpoint this workspace serves, with whether its router and versions are running now.

        A model's production endpoint is named after it; its staging endpoint, with its own router
        and URL, is ``MODEL@staging``.
        """
        from mlops_supervisor.tools.serving import ServingBackends

        backend = ServingBackends(self._context)
        summaries = []
        for model in backend.models():
            now = backend.status(model)
            router = now["router"] or {}
            summaries.append(
                EndpointSummary(
                    model=model,
                    url=router.get("url"),
                    router_alive=bool(router.get("alive")),
                    versions={
                        v: {k: s.get(k) for k in ("weight", "alive", "pid", "port")} for v, s in now["versions"].items()
                    },
                    stray=now["stray"],
                )
            )
        return summaries

    def apply_policy(self, path: str | Path, *, key: str | Path | Ed25519PrivateKey | None = None) -> dict[str, Any]:
        """Install the policy file ``path`` as the workspace policy, signed by this supervisor's user.

        A change that loosens any rule is only proposed: an approver of the policy in force then
        approves it (``approve_policy``). The new policy governs supervisors opened afterwards.
        """
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise PolicyFileError(f"policy file {path} cannot be read: {exc}") from None
        return apply_policy(
            self.workspace, self.audit, text, signer=self.user, key=self._required_key(self.user, key), source=str(path)
        )

    def approve_policy(
        self, digest: str, *, approver: str | None = None, key: str | Path | Ed25519PrivateKey | None = None
    ) -> dict[str, Any]:
        """Approve and install the proposed policy change whose digest starts with ``digest``."""
        who = approver or self.user
        return approve_policy(self.workspace, self.audit, digest, approver=who, key=self._required_key(who, key))

    def _required_key(self, name: str, key: str | Path | Ed25519PrivateKey | None) -> Ed25519PrivateKey:
        private = self.signing_key(name, key)
        if private is None:
            raise UsageError(
                f"this needs {name}'s private key to sign with: none at {default_key_dir() / name}, and none was "
                f"given (--key PATH or MLOPS_KEY); make one with `mlops-supervisor keys init {name}` and have its "
                "public line listed under people in the policy"
            )
        return private

    def call(self, tool: str, /, **args: Any) -> Any:
        """Call one tool directly, governed as the graph governs it: the documented direct-call entry point.

        The chokepoint decides first (the policy's denied tools, the arguments, the tool's gate over
        evidence read now; a tool the policy holds for approval is refused, since a direct call
        cannot wait for one: ``ask`` instead) and writes a ``decision`` line naming this supervisor's
        user, then runs the tool and writes its ``tool_result``. Returns the output, parsed from JSON
        where the tool speaks JSON. A refusal raises ``GateRefusedError`` carrying the deny decision;
        arguments the tool's schema refuses raise ``InvalidInputError``.
        """
        if tool not in self.tools:
            raise UsageError(f"there is no tool named {tool!r}; tools: {', '.join(sorted(self.tools.names))}")
        output = self._chokepoint.call(self.tools.get(tool), args)
        try:
            return json.loads(output)
        except (TypeError, ValueError):
            return output

    def up(self, model: str | None = None) -> list[dict[str, Any]]:
        """Restart what died of the endpoints this workspace serves (every model, or ``model``), as recorded.

        A governed operation (the tool ``restore_endpoints``, through ``call``): decided and audited.
        """
        restored: list[dict[str, Any]] = self.call("restore_endpoints", model=model)
        return restored

    def down(self, model: str | None = None) -> list[dict[str, Any]]:
        """Stop the model servers and routers this workspace runs (every model, or ``model``), strays included.

        A governed operation (the tool ``stop_endpoints``, through ``call``): decided and audited.
        """
        stopped: list[dict[str, Any]] = self.call("stop_endpoints", model=model)
        return stopped

    def served_models(self) -> list[str]:
        """The models this workspace serves (production endpoints; staging ones end in ``@staging``)."""
        from mlops_supervisor.tools.serving import ServingBackends

        return ServingBackends(self._context).models()

    def mermaid(self) -> str:
        """The graph's Mermaid drawing."""
        return str(self._graph(self.model_spec).get_graph().draw_mermaid())

    def close(self) -> None:
        """Release the checkpoint store and log files."""
        self._checkpoints.close()
        self.audit.close()
        close_logging(self.workspace.logs_dir)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- from a running event loop (notebooks) ---------------------------------------------
    # Each runs its sync call on this supervisor's own worker thread (supervisor/_aio.py): the loop keeps
    # running, and calls on one supervisor run one at a time, in order. Do not call the sync methods of a
    # supervisor while one of its async calls is in flight.

    async def aask(self, request: str, *, thread_id: str | None = None) -> RunResult:
        """``ask`` without blocking the event loop.

        Cancelling the awaiting task drops the call if it has not started; a call already
        running finishes (its steps are checkpointed and audited) and its result is discarded.
        """
        from mlops_supervisor._aio import call_on_worker

        return await call_on_worker(self, self.ask, request, thread_id=thread_id)

    def astream(self, request: str, *, thread_id: str | None = None) -> AsyncIterator[StreamEvent | RunResult]:
        """``stream`` as an async iterator: the same events in the same order, then the ``RunResult``.

        An error the run raises is raised here. Cancelled, or left before the end, the run stops
        at its next event: the node running then finishes, no further node starts, and the thread
        keeps the steps it took (an ``interrupted`` audit line says where it stopped).
        """
        from mlops_supervisor._aio import stream_on_worker

        return stream_on_worker(self, lambda: self.stream(request, thread_id=thread_id))

    async def aapprove(
        self,
        thread_id: str,
        *,
        reason: str = "",
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult:
        """``approve`` without blocking the event loop (cancelling it: as for ``aask``)."""
        from mlops_supervisor._aio import call_on_worker

        return await call_on_worker(self, self.approve, thread_id, reason=reason, approver=approver, key=key)

    async def areject(
        self,
        thread_id: str,
        *,
        reason: str,
        approver: str | None = None,
        key: str | Path | Ed25519PrivateKey | None = None,
    ) -> RunResult:
        """``reject`` without blocking the event loop (cancelling it: as for ``aask``)."""
        from mlops_supervisor._aio import call_on_worker

        return await call_on_worker(self, self.reject, thread_id, reason=reason, approver=approver, key=key)
