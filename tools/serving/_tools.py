"""The deployment agent's tools, bound to one context: deploy, canary steps with analysis, rollback, status.

Each job lives in its own module: ``_deploy`` (the gated deploy), ``_advance`` (one canary step
with its analysis), ``_rollback`` (traffic and the ``champion`` alias back to the last
known-good version) and ``_canary`` (the canary record and the window arithmetic). Deploy,
advance and rollback each run under the model's lock (``model_lock``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from mlops_supervisor.tools.core import GateResult, GovernedTool, ModelArgs, ModelVersionArgs, ToolContext, to_json
from mlops_supervisor.tools.serving._advance import advance
from mlops_supervisor.tools.serving._backend import staging_endpoint
from mlops_supervisor.tools.serving._backends import ServingBackends
from mlops_supervisor.tools.serving._canary import read_canary
from mlops_supervisor.tools.serving._deploy import deploy, deploy_gate
from mlops_supervisor.tools.serving._rollback import rollback

__all__ = ["deployment_tools"]


class _DeployArgs(ModelVersionArgs):
    target: Literal["production", "canary", "staging"] = Field(
        default="production",
        description="production (a canary share beside the stable version; the first version needs an approval), "
        "canary (the same as production), or staging (its own endpoint, no production traffic)",
    )


def deployment_tools(ctx: ToolContext) -> list[GovernedTool]:
    """deploy_model, advance_canary, rollback_model and endpoint_status."""
    backend = ServingBackends(ctx)

    def gate(args: Mapping[str, Any]) -> GateResult:
        return deploy_gate(ctx, backend, args)

    def deploy_model(model: str, version: int, target: str = "production") -> str:
        return to_json(deploy(ctx, backend, model, version, target))

    def advance_canary(model: str) -> str:
        return to_json(advance(ctx, backend, model))

    def rollback_model(model: str) -> str:
        return to_json(rollback(ctx, backend, model))

    def endpoint_status(model: str) -> str:
        staging = backend.status(staging_endpoint(model))
        return to_json(
            {
                **backend.status(model),
                "canary": read_canary(ctx.workspace, model),
                "staging": staging if staging["router"] or staging["versions"] or staging["stray"] else None,
            }
        )

    return [
        GovernedTool.from_function(
            "deploy_model",
            "Deploy an evaluated version to production (a canary at the first traffic step beside the stable "
            "version; a first version takes all traffic and needs an approval) or to staging (its own endpoint).",
            _DeployArgs,
            deploy_model,
            mutates=True,
            gate=gate,
        ),
        GovernedTool.from_function(
            "advance_canary",
            "Judge the canary's traffic window against stable once the step has baked: pass takes the next "
            "step (the last one below 100 % marks it passed and holds; promote takes it to 100 %), fail rolls "
            "back automatically, inconclusive holds.",
            ModelArgs,
            advance_canary,
            mutates=True,
        ),
        GovernedTool.from_function(
            "rollback_model",
            "Restore the last known-good version in traffic and in the champion alias together.",
            ModelArgs,
            rollback_model,
            mutates=True,
        ),
        GovernedTool.from_function(
            "endpoint_status",
            "Versions, weights, processes and canary progress of a model's production endpoint, and its "
            "staging endpoint.",
            ModelArgs,
            endpoint_status,
            mutates=False,
        ),
    ]
