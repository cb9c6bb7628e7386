"""The one governed invocation every state-changing call passes, whoever makes it.

The graph's tools node (after its policy and approval nodes decided and audited the call), a
library user (``Supervisor.call``, ``Supervisor.up``/``down``, or a mutating tool's own
``.tool.invoke``) and the command line (``up``, ``down``) all run a tool's body through
``Chokepoint.invoke``, the only code that does. A direct call is decided first, by
``Chokepoint.decide``: the policy's rules (``decide_tool_call``), the arguments, the tool's gate
over evidence read now (``run_gate``, fail closed), and approval where the policy holds the tool,
which a direct call cannot wait for unless the body verifies an evidence-bound approval itself.
Each call leaves a ``decision`` line (direct calls; the graph wrote its own), then ``tool_call``
and ``tool_result`` lines naming who acted and from where.
"""

from __future__ import annotations

import getpass
import hashlib
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Literal

from mlops_supervisor.policies import (
    AuditStore,
    Decision,
    GateRefusedError,
    InvalidInputError,
    Policy,
    ProposedCall,
    ReasonCode,
    Redactor,
    ToolNotAvailableError,
    decide_tool_call,
    redact_value,
)
from mlops_supervisor.policies.secrets_in_args import deny_secret_in_arguments, secrets_in_arguments, without_secrets
from mlops_supervisor.tools.core._context import ToolContext
from mlops_supervisor.tools.core._tool import GateResult, GovernedTool

__all__ = ["CallSite", "Chokepoint", "Invocation", "Origin", "invoked_from", "run_gate"]

Origin = Literal["graph", "library", "cli"]
Outcome = Literal["ok", "refused", "unavailable", "invalid_input", "error"]

_ORIGIN: ContextVar[Origin] = ContextVar("mlops_supervisor_origin", default="library")
_RUNNING: ContextVar[CallSite | None] = ContextVar("mlops_supervisor_running_call", default=None)


@contextmanager
def invoked_from(origin: Origin) -> Iterator[None]:
    """Direct calls made inside this block are recorded as coming from ``origin`` (the CLI sets ``cli``)."""
    token = _ORIGIN.set(origin)
    try:
        yield
    finally:
        _ORIGIN.reset(token)


@dataclass(frozen=True)
class CallSite:
    """Who makes a call and from where, as the audit lines name them."""

    origin: Origin
    actor: str
    call_id: str
    thread_id: str | None = None
    agent: str | None = None

    def fields(self) -> dict[str, Any]:
        """The audit fields of this site (the actor under ``requester``, as the graph's lines name it)."""
        return {
            "thread_id": self.thread_id,
            "agent": self.agent,
            "requester": self.actor,
            "origin": self.origin,
            "call_id": self.call_id,
        }


@dataclass(frozen=True)
class Invocation:
    """What running one body came to: the outcome, what it returned, and its redacted text as audited."""

    outcome: Outcome
    args: Mapping[str, Any]
    """The arguments, redacted."""
    text: str
    """The output (or the error), redacted: what the audit hashes and a model may see."""
    output: Any = None
    """What the body returned, unredacted (``None`` when it raised)."""
    reason_code: str = ""
    refusal: Decision | None = None
    """The deny decision of a gate the body re-ran, when it refused."""
    error: Exception | None = None


def run_gate(governed: GovernedTool, args: Mapping[str, Any]) -> GateResult | None:
    """The tool's gate over evidence read now; a gate that cannot read its evidence refuses."""
    if governed.gate is None:
        return None
    try:
        return governed.gate(args)
    except InvalidInputError as exc:
        return GateResult(Decision.deny(governed.name, ReasonCode.INVALID_ARGUMENTS, str(exc)))
    except Exception as exc:  # noqa: BLE001 - fail closed: evidence that cannot be read is no evidence
        message = (
            f"the gate of {governed.name} could not read its evidence ({type(exc).__name__}: {exc}); nothing was done"
        )
        return GateResult(Decision.deny(governed.name, ReasonCode.EVIDENCE_UNAVAILABLE, message))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class Chokepoint:
    """The governed invocation over one policy, audit log and redactor; ``actor`` acts on direct calls."""

    policy: Policy
    audit: AuditStore
    redactor: Redactor
    actor: str = ""

    @classmethod
    def for_context(cls, ctx: ToolContext, *, actor: str | None = None) -> Chokepoint:
        """The chokepoint of the tools bound to ``ctx``, acting as ``actor`` (default: the OS user)."""
        return cls(policy=ctx.policy, audit=ctx.audit, redactor=ctx.redactor, actor=actor or _os_user())

    # --- direct calls -------------------------------------------------------------------

    def decide(self, governed: GovernedTool, args: Mapping[str, Any]) -> Decision:
        """The decision on a direct call of ``governed`` with ``args``, before anything runs.

        No agent asks, so there is no allow-list. A secret in the arguments is refused first
        (``secret_in_arguments``), before the gate reads evidence with them; then the policy's
        own rules apply, then the arguments, then the gate. A tool the policy holds for approval
        is refused unless its gate binds it to an approval that its body verifies (the champion alias).
        """
        name = governed.name
        secret = deny_secret_in_arguments(name, secrets_in_arguments(self.redactor, args))
        if secret is not None:
            return secret
        call = ProposedCall(agent="direct", tool=name, args=args, call_id="")
        decision = decide_tool_call(call, thread_id="", allow_list={name}, known_tools={name}, policy=self.policy)
        if decision.kind == "deny":
            return decision
        problem = governed.validate_args(args)
        if problem is not None:
            return Decision.deny(name, ReasonCode.INVALID_ARGUMENTS, f"invalid arguments for {name!r}: {problem}")
        gated = run_gate(governed, args)
        if gated is not None and not gated.decision.allowed:
            return gated.decision
        if gated is not None and gated.approval_action:
            return Decision.allow(
                name,
                f"{gated.decision.message}; the tool verifies a signed approval bound to evidence "
                f"{gated.evidence_digest[:12]} itself before it changes anything",
            )
        if decision.kind == "needs_approval":
            return Decision.deny(
                name,
                ReasonCode.APPROVAL_REQUIRED,
                f"{name!r} is held for approval by the policy ({self.policy.source}, approval.required_for) and a "
                "direct call cannot wait for one: ask the supervisor instead (`Supervisor.ask` or "
                "`mlops-supervisor ask`), so the request waits for a signed approval by a listed approver",
            )
        return decision

    def call(self, governed: GovernedTool, args: dict[str, Any]) -> Any:
        """Decide and audit a direct call, then run it; what the body returned.

        Raises ``GateRefusedError`` (carrying the deny decision) when the call is refused, before
        or inside the body, ``InvalidInputError`` for arguments the schema refuses, and whatever
        else the body raised; each after its audit lines are written.
        """
        site = self._site()
        decision = self.decide(governed, args)
        stored = redact_value(self.redactor, without_secrets(self.redactor, args))
        self.audit.append("decision", **site.fields(), args=stored, **decision.as_record())
        if not decision.allowed:
            if decision.reason_code is ReasonCode.INVALID_ARGUMENTS:
                raise InvalidInputError(decision.reason_code.value, decision.message)
            raise GateRefusedError(decision)
        done = self.invoke(governed, args, decided=decision, site=site)
        if done.error is not None:
            raise done.error
        return done.output

    def _site(self) -> CallSite:
        """A direct call's site: inside a running call (a body calling a tool), that call's origin, actor and thread."""
        call_id = f"direct-{uuid.uuid4().hex[:12]}"
        outer = _RUNNING.get()
        if outer is not None:
            return replace(outer, call_id=call_id)
        return CallSite(origin=_ORIGIN.get(), actor=self.actor, call_id=call_id)

    # --- the one place a body runs ------------------------------------------------------

    def invoke(
        self, governed: GovernedTool, args: Mapping[str, Any], *, decided: Decision, site: CallSite
    ) -> Invocation:
        """Run ``governed``'s body on ``args`` under ``decided`` (an allow already audited), auditing call and result.

        Only two callers pass a decision: ``call`` above, which just made and audited it, and the
        graph's tools node, whose policy and approval nodes did. A refusal the body raises (its
        gate re-run under the model's lock) is audited as a decision of its own.
        """
        if not decided.allowed:
            raise ValueError(f"invoke needs an allow decision for {governed.name!r}, got {decided.kind}")
        name = governed.name
        shown = redact_value(self.redactor, dict(args))  # decided calls carry no secret: refused at the decision
        where = site.fields()
        self.audit.append("tool_call", **where, action=name, args=shown)
        body = governed._body if governed._body is not None else governed.tool
        output: Any = None
        outcome: Outcome
        reason_code = ""
        refusal: Decision | None = None
        error: Exception | None = None
        token = _RUNNING.set(site)
        try:
            output = body.invoke(dict(args))
            text, outcome = str(output), "ok"
        except ToolNotAvailableError as exc:
            text, outcome, error = str(exc), "unavailable", exc
        except GateRefusedError as exc:
            said = exc.decision
            assert isinstance(said, Decision)  # GateRefusedError is declared in policies, below Decision's users
            refusal, error = said, exc
            text, outcome, reason_code = refusal.message, "refused", refusal.reason_code.value
            self.audit.append("decision", **where, args=shown, **refusal.as_record())
        except InvalidInputError as exc:
            text, outcome, reason_code, error = str(exc), "invalid_input", exc.reason_code, exc
        except Exception as exc:  # noqa: BLE001 - recorded, then reported to the agent or raised to the caller
            text, outcome, error = f"{type(exc).__name__}: {exc}", "error", exc
        finally:
            _RUNNING.reset(token)
        text = self.redactor.redact_text(text)
        self.audit.append(
            "tool_result",
            **where,
            action=name,
            outcome=outcome,
            **({"reason_code": reason_code} if reason_code else {}),
            output_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            output_chars=len(text),
        )
        return Invocation(
            outcome=outcome,
            args=shown,
            text=text,
            output=output,
            reason_code=reason_code,
            refusal=refusal,
            error=error,
        )
