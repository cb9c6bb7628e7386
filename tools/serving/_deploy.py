"""Deploying an evaluated version: its gate, the traffic steps it will climb, and its canary record.

``deploy_model`` needs a passing evaluation of the version (the challenger gate, re-run under
the model's lock). The first version of a model takes all traffic; a later one starts as a
canary at the first of the spec's ``deployment.canary_steps``; ``staging`` takes all traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlops_supervisor.policies import GateRefusedError, InvalidInputError
from mlops_supervisor.policies.gates import evaluate_challenger_gate
from mlops_supervisor.tools._spec import DeploymentSpec
from mlops_supervisor.tools.core import GateResult, ToolContext, model_lock, using_store
from mlops_supervisor.tools.registry import model_version, training_spec, version_evidence
from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._canary import CanaryRecord, write_canary
from mlops_supervisor.tools.serving._metrics import read_router

__all__ = ["deploy", "deploy_gate"]


def deploy_gate(ctx: ToolContext, args: Mapping[str, Any]) -> GateResult:
    """The challenger gate on ``args``' model and version, over their evidence read now."""
    with using_store(ctx.store_uri) as client:
        evidence = version_evidence(client, str(args["model"]), int(args["version"]))
    return GateResult(
        evaluate_challenger_gate(
            evidence,
            max_age_hours=ctx.policy.evaluation.max_age_hours,
            now=ctx.clock(),
            action="deploy_model",
        )
    )


def deploy(ctx: ToolContext, backend: ServingBackend, model: str, version: int, target: str) -> dict[str, Any]:
    """Put ``version`` into traffic (gate passed, under the model's lock) and start its canary record."""
    if target not in {"canary", "staging"}:
        raise InvalidInputError("invalid_target", f"target {target!r} is not allowed; use canary or staging")
    with model_lock(ctx.workspace, model):
        gated = deploy_gate(ctx, {"model": model, "version": version})
        if not gated.decision.allowed:
            raise GateRefusedError(gated.decision)
        with using_store(ctx.store_uri) as client:
            found = model_version(client, model, version)
            plan = _deployment_spec(client, found)
        status = backend.status(model)
        stable = [v for v, s in status["versions"].items() if s["alive"] and s["weight"] > 0 and v != version]
        steps = _traffic_steps(stable, target, plan)
        result = backend.deploy(model, version, found.source, weight=steps[0])
        _mark_deployed(ctx.store_uri, model, version)
        canary = CanaryRecord(
            version=version,
            stable=stable[0] if stable and target != "staging" else None,
            steps=steps,
            step=0,
            analysis=plan.analysis.model_dump(),
            snapshot=read_router(backend, model),
            started_at=datetime.now(UTC).isoformat(),
            history=[],
        )
        write_canary(ctx.workspace, model, canary)
    return {
        "model": model,
        "version": version,
        "role": "canary" if canary["stable"] else "first",
        "weight": steps[0],
        "steps": steps,
        "stable": canary["stable"],
        "status": result,
    }


def _deployment_spec(client: Any, found: Any) -> DeploymentSpec:
    """The ``deployment`` section of the spec the model version ``found`` was trained from; the defaults without one."""
    run_id = found.tags.get("mlops.training.run_id")
    return training_spec(client, run_id).deployment if run_id else DeploymentSpec()


def _traffic_steps(stable: list[int], target: str, plan: DeploymentSpec) -> list[int]:
    """The weights the version will climb through, the first of them now."""
    # With nothing else serving (or for staging) the version takes all traffic at once, and its
    # analysis is a smoke check against absolute limits; otherwise it climbs the canary steps.
    return [100] if not stable or target == "staging" else list(plan.canary_steps)


def _mark_deployed(store_uri: str, model: str, version: int) -> None:
    """Tag ``version`` deployed now, its canary pending."""
    with using_store(store_uri) as client:
        client.set_model_version_tag(model, str(version), "mlops.deployed.at", datetime.now(UTC).isoformat())
        client.set_model_version_tag(model, str(version), "mlops.canary.passed", "pending")
