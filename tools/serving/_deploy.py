"""Deploying an evaluated version: its gate, the traffic steps it will climb, and its canary record.

Three ways into traffic, each behind its gate (re-run in the tool body under the model's lock):

- **canary** (production, with a stable version serving): the challenger gate (a passing
  evaluation) and a deployment spec no looser than the policy's canary minimums. The version
  starts at the first canary step; ``advance_canary`` climbs the steps below 100, and passing
  the last one holds that share until ``promote_model`` (the champion gate) takes it to 100.
- **first** (production, nothing else serving): there is no stable version to compare with,
  so the version takes all traffic at once and needs the champion gate (passing evaluation and
  an evidence-bound approval, ``champion_allowed``): it becomes the champion, then gets a
  smoke analysis against absolute limits.
- **staging**: the challenger gate only; the version serves alone on the model's staging
  endpoint (``staging_endpoint``: its own router and URL). Production is not touched.

Whichever way, the endpoint's feedback contract (``feedback.json``, ``_feedback``) gains the
version before it serves, so labels for its predictions can be checked against its classes, and
records whether the policy in force lets the router take labels (``POST /feedback``): the
router, which holds no policy, answers by it until the next deploy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from mlops_supervisor.policies import Decision, GateRefusedError, InvalidInputError, ReasonCode
from mlops_supervisor.policies.gates import (
    VersionEvidence,
    evaluate_challenger_gate,
    evaluate_champion_gate,
    evidence_digest,
)
from mlops_supervisor.tools._spec import DeploymentSpec, check_deployment
from mlops_supervisor.tools.core import GateResult, ToolContext, model_lock, using_store
from mlops_supervisor.tools.registry import (
    CHAMPION_ACTION,
    champion_allowed,
    model_version,
    set_champion,
    trained_from,
    version_evidence,
)
from mlops_supervisor.tools.serving._backend import ServingBackend, staging_endpoint
from mlops_supervisor.tools.serving._canary import CanaryRecord, write_canary
from mlops_supervisor.tools.serving._feedback import record_serving_version

__all__ = ["TARGETS", "deploy", "deploy_gate"]

Target = Literal["production", "staging"]

TARGETS: dict[str, Target] = {"production": "production", "canary": "production", "staging": "staging"}
"""The targets ``deploy_model`` accepts; ``canary`` is the older name of production."""

_ACTION = "deploy_model"


def deploy_gate(ctx: ToolContext, backend: ServingBackend, args: Mapping[str, Any]) -> GateResult:
    """The gate of ``args``' deploy over the evidence read now; a first production deploy is held for an approval."""
    model, version = str(args["model"]), int(args["version"])
    target = _target(str(args.get("target", "production")))
    first = target == "production" and not _stable_versions(backend.status(model), version)
    with using_store(ctx.store_uri) as client:
        evidence = version_evidence(client, model, version)
        decision = _evidence_decision(ctx, evidence, first=first)
        if decision.allowed and target == "production":
            decision = _canary_plan_decision(ctx, _deployment_spec(client, model_version(client, model, version)))
    if first and decision.allowed:
        return GateResult(decision, evidence_digest(evidence), CHAMPION_ACTION)
    return GateResult(decision)


def deploy(
    ctx: ToolContext, backend: ServingBackend, model: str, version: int, target: str = "production"
) -> dict[str, Any]:
    """Put ``version`` into traffic as its gate allows (re-run under the model's lock): canary, first or staging."""
    where = _target(target)
    with model_lock(ctx.workspace, model):
        if where == "staging":
            return _deploy_staging(ctx, backend, model, version)
        stable = _stable_versions(backend.status(model), version)
        with using_store(ctx.store_uri) as client:
            found = model_version(client, model, version)
            plan = _deployment_spec(client, found)
            if stable:
                evidence = version_evidence(client, model, version)
                decision = _evidence_decision(ctx, evidence, first=False)
                digest: str | None = evidence_digest(evidence)
                record = None
            else:  # the approval names the digest of the evidence it was given over
                decision, record = champion_allowed(ctx, client, model, version, _ACTION)
                digest = record.evidence_digest if record is not None else None
            if decision.allowed:
                decision = _canary_plan_decision(ctx, plan)
            if not decision.allowed:
                raise GateRefusedError(decision)
            steps = plan.canary_weights if stable else [100]
            # the window opens now, and evidence that cannot be read refuses the canary before it takes traffic
            snapshot = backend.read_metrics(model)
            # before it serves: labels for its first predictions find its classes
            record_serving_version(ctx.workspace / "serving" / model, client, model, version, policy=ctx.policy)
            # the backend labels what it runs with the digest of the evidence this gate read
            result = backend.deploy(model, version, found.source, weight=steps[0], evidence_digest=digest)
            champion = None
            if record is not None:  # first: approved as champion above, over the evidence as it was
                champion = {"previous": set_champion(client, model, version, record, at=ctx.clock().isoformat())}
            _mark_deployed(client, ctx, model, version)
        started = ctx.clock().isoformat()
        canary = CanaryRecord(
            version=version,
            stable=stable[0] if stable else None,
            steps=steps,
            step=0,
            analysis=plan.analysis.model_dump(),
            snapshot=snapshot,
            started_at=started,
            step_started_at=started,
            state="running",
            history=[],
        )
        write_canary(ctx.workspace, model, canary)
    return {
        "model": model,
        "version": version,
        "target": "production",
        "role": "canary" if stable else "first",
        "weight": steps[0],
        "steps": steps,
        "stable": canary["stable"],
        **({"champion": champion} if champion is not None else {}),
        "url": (result.get("router") or {}).get("url"),
        "status": result,
    }


def _deploy_staging(ctx: ToolContext, backend: ServingBackend, model: str, version: int) -> dict[str, Any]:
    """``version`` alone on ``model``'s staging endpoint (under the lock already held); production is not touched."""
    with using_store(ctx.store_uri) as client:
        evidence = version_evidence(client, model, version)
        decision = _evidence_decision(ctx, evidence, first=False)
        if not decision.allowed:
            raise GateRefusedError(decision)
        found = model_version(client, model, version)
        endpoint = staging_endpoint(model)
        record_serving_version(ctx.workspace / "serving" / endpoint, client, model, version, policy=ctx.policy)
        backend.deploy(endpoint, version, found.source, weight=100, evidence_digest=evidence_digest(evidence))
        # one version per staging endpoint: the one deployed before stops (rollback keeps only the one named)
        result = backend.rollback(endpoint, version)
        client.set_model_version_tag(model, str(version), "mlops.staging.deployed.at", ctx.clock().isoformat())
    return {
        "model": model,
        "version": version,
        "target": "staging",
        "role": "staging",
        "endpoint": endpoint,
        "weight": 100,
        "url": (result.get("router") or {}).get("url"),
        "status": result,
    }


def _target(target: str) -> Target:
    """``target`` as production or staging; ``InvalidInputError`` for anything else."""
    if target not in TARGETS:
        raise InvalidInputError(
            "invalid_target", f"target {target!r} is not allowed; use production (or canary, the same) or staging"
        )
    return TARGETS[target]


def _stable_versions(status: Mapping[str, Any], version: int) -> list[int]:
    """The versions other than ``version`` serving production traffic now (alive, weight above 0)."""
    return [int(v) for v, s in status["versions"].items() if s["alive"] and s["weight"] > 0 and int(v) != version]


def _evidence_decision(ctx: ToolContext, evidence: VersionEvidence, *, first: bool) -> Decision:
    """The champion gate for a first production deploy (its approval comes after), else the challenger gate."""
    if first:
        return evaluate_champion_gate(evidence, rules=ctx.policy.evaluation, now=ctx.clock(), action=_ACTION)
    return evaluate_challenger_gate(evidence, rules=ctx.policy.evaluation, now=ctx.clock(), action=_ACTION)


def _canary_plan_decision(ctx: ToolContext, plan: DeploymentSpec) -> Decision:
    """Allow when the deployment spec asks for at least the policy's canary minimums, else deny naming what falls short.

    The spec was logged with the training run and may predate the policy in force: it is
    checked against the policy now, and a looser one is refused, not quietly tightened.
    """
    below = check_deployment(plan, ctx.policy.canary)
    if below:
        return Decision.deny(
            _ACTION,
            ReasonCode.CANARY_BELOW_POLICY,
            "the deployment section of the spec this version was trained from asks for less than the policy's "
            f"canary minimums: {'; '.join(below)}. Train from a spec that meets them.",
        )
    return Decision.allow(_ACTION, "the canary plan meets the policy's minimums")


def _deployment_spec(client: Any, found: Any) -> DeploymentSpec:
    """The ``deployment`` section of the spec the model version ``found`` was trained from; the defaults without one."""
    spec = trained_from(client, found)
    return spec.deployment if spec is not None else DeploymentSpec()


def _mark_deployed(client: Any, ctx: ToolContext, model: str, version: int) -> None:
    """Tag ``version`` deployed to production now, its canary pending."""
    client.set_model_version_tag(model, str(version), "mlops.deployed.at", ctx.clock().isoformat())
    client.set_model_version_tag(model, str(version), "mlops.canary.passed", "pending")
