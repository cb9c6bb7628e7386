"""The workspace's policy in force, and the only way to change it: a signed, audited change.

``<workspace>/policy.yaml`` is the policy in force; every text ever proposed or installed is kept
under ``<workspace>/policies/<sha256>.yaml``. The audit log records each installation with the
proposer's signed statement and, for a change that loosens any rule, the signed approval of an
approver of the policy it replaces (never the proposer, by name or key). On every load the file's
digest must be the one last installed and those signatures must verify: a hand-edited policy file
stops everything until it is installed properly.

The first policy of a workspace (in force until then: the built-in default, which lists nobody)
is installed on the signature of a person it lists itself: whoever sets up the workspace.

A policy given for one run (``--policy``, ``MLOPS_POLICY``, ``Supervisor(policy=...)``) may only
tighten the policy in force; a loosening is refused with the fields named.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from mlops_supervisor._settings import Settings
from mlops_supervisor._stores import open_audit
from mlops_supervisor._workspace import Workspace
from mlops_supervisor.policies import (
    AuditLog,
    AuditStore,
    Policy,
    PolicyFileError,
    Signed,
    UsageError,
    load_policy,
    sign_statement,
    verify_statement,
)
from mlops_supervisor.policies.floors import policy_widenings
from mlops_supervisor.policies.policy import parse_policy
from mlops_supervisor.tools.core import write_atomic

__all__ = ["apply_policy", "approve_policy", "policy_in_force", "resolve_policy"]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _history(workspace: Workspace, digest: str) -> Path:
    return workspace.root / "policies" / f"{digest}.yaml"


def _records(workspace: Workspace, audit: AuditStore | None, event: str) -> list[dict[str, Any]]:
    """Every ``event`` record of an intact audit chain (``audit``; None: the workspace's file), oldest first."""
    if audit is None:
        audit = AuditLog(workspace.audit_path)
    if isinstance(audit, AuditLog) and not audit.path.exists():
        return []
    check = audit.verify()
    if not check.ok:
        raise PolicyFileError(
            f"the audit log {audit.location} is broken at line {check.bad_line} ({check.problem}): the policy in "
            "force cannot be established until it is restored"
        )
    return [r for r in audit.records() if r.get("event") == event]


def _stored_policy(workspace: Workspace, digest: str) -> Policy:
    """The policy text ``digest`` from the workspace's history, checked against its digest."""
    path = _history(workspace, digest)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise PolicyFileError(f"policy {digest[:12]} is recorded in the audit log but {path} is missing") from None
    if _digest(text) != digest:
        raise PolicyFileError(f"{path} does not hold the policy {digest[:12]} it is named after: it was edited")
    return parse_policy(text, str(path))


def _check_installation(workspace: Workspace, record: dict[str, Any], policy: Policy) -> None:
    """Raise unless ``record``'s signatures install ``policy`` by the rules above."""
    previous = str(record.get("previous") or "")
    try:
        proposal = Signed.model_validate(record.get("proposal"))
        approval = Signed.model_validate(record["approval"]) if record.get("approval") else None
    except ValidationError:
        raise PolicyFileError("the installation record of the workspace policy is not signed") from None
    statement = proposal.statement
    if (statement.get("kind"), statement.get("digest"), statement.get("previous")) != (
        "policy_change",
        policy.digest,
        previous,
    ):
        raise PolicyFileError("the signed proposal in the installation record is for another policy")
    before = _stored_policy(workspace, previous) if previous else None
    # The proposer is a person of the policy being replaced; the first policy vouches for its installer.
    problem = verify_statement(proposal, (before or policy).people)
    if problem is not None:
        raise PolicyFileError(f"the workspace policy was not installed by a listed person: {problem}")
    if before is None or not policy_widenings(before, policy):
        return
    if approval is None:
        raise PolicyFileError("the workspace policy loosens the one it replaced, and its installation has no approval")
    said = approval.statement
    problem = verify_statement(approval, before.people)
    if problem is None and approval.signer not in before.approvers:
        problem = f"{approval.signer!r} is not an approver of the policy it replaced"
    if problem is None and approval.key == proposal.key:
        problem = "the approver signed with the proposer's key"
    if problem is None and (said.get("kind"), said.get("proposal_signature")) != (
        "policy_approval",
        proposal.signature,
    ):
        problem = "the signed approval is for another proposal"
    if problem is not None:
        raise PolicyFileError(f"the loosening of the workspace policy was not approved: {problem}")


def policy_in_force(workspace: Workspace, audit: AuditStore | None = None) -> Policy:
    """The workspace's installed policy, verified against the installation records of ``audit`` (default: the
    workspace's file chain); the built-in default when none was ever installed."""
    installs = _records(workspace, audit, "policy_installed")
    path = workspace.policy_path
    if not path.exists():
        if installs:
            latest = installs[-1]["digest"]
            raise PolicyFileError(
                f"{path} is missing, but the audit log records policy {latest[:12]} as installed; restore it from "
                f"{_history(workspace, latest)}"
            )
        return load_policy(None)
    policy = load_policy(path)
    if not installs:
        raise PolicyFileError(
            f"{path} was not installed through `mlops-supervisor policy apply` (no signed record of it in the audit "
            "log); move it aside and install it with that command"
        )
    record = installs[-1]
    if record.get("digest") != policy.digest:
        raise PolicyFileError(
            f"{path} (sha256 {policy.digest[:12]}) is not the policy last installed ({str(record.get('digest'))[:12]}): "
            "it was edited by hand. Restore it, or install the change with `mlops-supervisor policy apply`"
        )
    _check_installation(workspace, record, policy)
    return policy


def resolve_policy(
    workspace: Workspace, policy: Path | Policy | None, settings: Settings, *, audit: AuditStore | None = None
) -> Policy:
    """The policy for this run: the workspace's, or one given that only tightens it (``PolicyFileError`` if not).

    The workspace's policy is checked against the audit chain the settings name (or ``audit``, when given).
    """
    if audit is None:
        opened = open_audit(settings, workspace.root)
        try:
            floor = policy_in_force(workspace, opened)
        finally:
            opened.close()
    else:
        floor = policy_in_force(workspace, audit)
    if isinstance(policy, Policy):
        candidate = policy
    else:
        path = policy or settings.policy
        if path is None:
            return floor
        candidate = load_policy(Path(path))
    looser = policy_widenings(floor, candidate)
    if looser:
        raise PolicyFileError(
            f"policy {candidate.source} would loosen the workspace policy ({floor.source}), which is the floor: "
            + "; ".join(looser)
            + ". A run's policy may only tighten it; change the workspace policy with `mlops-supervisor policy apply`"
        )
    return candidate


def _installed_digest(workspace: Workspace, audit: AuditStore) -> str:
    installs = _records(workspace, audit, "policy_installed")
    return str(installs[-1]["digest"]) if installs else ""


def apply_policy(
    workspace: Workspace, audit: AuditStore, text: str, *, signer: str, key: Ed25519PrivateKey, source: str
) -> dict[str, Any]:
    """Install ``text`` as the workspace policy, signed by ``signer``; a loosening is only proposed.

    Returns what happened: ``installed`` (with the loosened fields, if a first policy loosens the
    default), or ``proposed`` with the command an approver runs.
    """
    candidate = parse_policy(text, source)
    current = policy_in_force(workspace, audit)
    previous = _installed_digest(workspace, audit)
    if candidate.digest == current.digest and previous:
        raise UsageError(f"{source} is already the workspace policy ({candidate.digest[:12]})")
    proposal = sign_statement(key, signer, {"kind": "policy_change", "digest": candidate.digest, "previous": previous})
    problem = verify_statement(proposal, (current if previous else candidate).people)
    if problem is not None:
        where = "the workspace policy" if previous else f"the policy {source} (the first policy names its installer)"
        raise UsageError(f"{signer!r} cannot change the workspace policy: {problem}; list them in {where}")
    looser = policy_widenings(current, candidate)
    write_atomic(_history(workspace, candidate.digest), text)
    if previous and looser:
        audit.append(
            "policy_proposed",
            digest=candidate.digest,
            previous=previous,
            proposer=signer,
            widenings=looser,
            proposal=proposal.model_dump(),
        )
        return {
            "status": "proposed",
            "digest": candidate.digest,
            "widenings": looser,
            "approvers": [a for a in current.approvers if a != signer],
            "approve_command": f"mlops-supervisor policy approve {candidate.digest[:12]} --as APPROVER",
        }
    return _install(workspace, audit, text, candidate, previous, proposal, None, looser)


def _install(
    workspace: Workspace,
    audit: AuditStore,
    text: str,
    candidate: Policy,
    previous: str,
    proposal: Signed,
    approval: Signed | None,
    looser: list[str],
) -> dict[str, Any]:
    audit.append(
        "policy_installed",
        digest=candidate.digest,
        previous=previous,
        proposer=proposal.signer,
        approver=approval.signer if approval else None,
        widenings=looser,
        proposal=proposal.model_dump(),
        approval=approval.model_dump() if approval else None,
    )
    write_atomic(workspace.policy_path, text)
    return {
        "status": "installed",
        "digest": candidate.digest,
        "previous": previous or None,
        "proposer": proposal.signer,
        "approver": approval.signer if approval else None,
        "widenings": looser,
    }


def approve_policy(
    workspace: Workspace, audit: AuditStore, digest_prefix: str, *, approver: str, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """Approve the proposed loosening whose digest starts with ``digest_prefix`` and install it."""
    previous = _installed_digest(workspace, audit)
    proposals = [
        r for r in _records(workspace, audit, "policy_proposed") if str(r.get("digest", "")).startswith(digest_prefix)
    ]
    current = [r for r in proposals if r.get("previous") == previous]
    if len(digest_prefix) < 6 or not current:
        known = ", ".join(str(r["digest"])[:12] for r in _records(workspace, audit, "policy_proposed")[-5:]) or "none"
        raise UsageError(
            f"no pending policy proposal {digest_prefix!r} against the policy in force (pending: {known}); give at "
            "least 6 characters of its digest"
        )
    record = current[-1]
    before = policy_in_force(workspace, audit)
    proposal = Signed.model_validate(record["proposal"])
    if approver not in before.approvers:
        raise UsageError(f"{approver!r} is not an approver of the workspace policy ({', '.join(before.approvers)})")
    approval = sign_statement(
        key,
        approver,
        {"kind": "policy_approval", "digest": record["digest"], "proposal_signature": proposal.signature},
    )
    problem = verify_statement(approval, before.people)
    if problem is None and (approver == proposal.signer or approval.key == proposal.key):
        problem = "the proposer cannot approve their own change"
    if problem is not None:
        raise UsageError(f"{approver!r} cannot approve this policy change: {problem}")
    text = _history(workspace, str(record["digest"])).read_text("utf-8")
    candidate = parse_policy(text, str(workspace.policy_path))
    if candidate.digest != record["digest"]:
        raise PolicyFileError(f"the proposed policy {digest_prefix} was edited after it was proposed")
    return _install(
        workspace, audit, text, candidate, previous, proposal, approval, policy_widenings(before, candidate)
    )
