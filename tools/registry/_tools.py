"""The registry agent's tools and the promotion they share with the deployment agent.

Every alias change re-runs its gate inside the tool, under a per-model lock, against
evidence read at that moment: calling these from a notebook meets the same gate as the
graph, and two promotions racing for ``champion`` cannot both win (the second finds the
evidence its approval was bound to has changed: the champion moved).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from mlops_supervisor.policies import Decision, GateRefusedError, ReasonCode
from mlops_supervisor.policies.gates import (
    ApprovalRecord,
    evaluate_approval_record,
    evaluate_challenger_gate,
    evaluate_champion_gate,
    evaluate_register_gate,
    evidence_digest,
)
from mlops_supervisor.tools.core import (
    GateResult,
    GovernedTool,
    ModelArgs,
    ModelVersionArgs,
    ToolContext,
    model_lock,
    to_json,
    using_store,
)
from mlops_supervisor.tools.registry._evidence import (
    CHAMPION_ACTION,
    aliased_version,
    approval_record,
    training_evidence,
    version_evidence,
)

__all__ = ["champion_allowed", "promotion_tool", "registry_tools", "set_champion"]

Alias = Literal["challenger", "champion"]


def champion_allowed(
    ctx: ToolContext, client: Any, model: str, version: int, action: str
) -> tuple[Decision, ApprovalRecord | None]:
    """The champion gate on ``model`` ``version`` and the approval it needs, read once, now.

    The one check every way to the champion runs in its tool body, under the model's lock:
    ``set_alias``/``promote_model`` and a first production ``deploy_model``. The approval must
    bind this version and the evidence as it is now (verifying the audit chain is not free).
    """
    evidence = version_evidence(client, model, version)
    decision = evaluate_champion_gate(evidence, rules=ctx.policy.evaluation, now=ctx.clock(), action=action)
    if not decision.allowed:
        return decision, None
    record = approval_record(ctx.audit, model=model, version=version, action=CHAMPION_ACTION, policy=ctx.policy)
    return evaluate_approval_record(
        record,
        model=model,
        version=version,
        action=CHAMPION_ACTION,
        current_digest=evidence_digest(evidence),
        approvers=ctx.policy.approvers,
        now=ctx.clock(),
    ), record


def set_champion(client: Any, model: str, version: int, record: ApprovalRecord, *, at: str) -> int | None:
    """Point ``champion`` at ``version`` with the approval ``record`` that let it as tags: the version it replaced.

    Call only once ``champion_allowed`` allowed ``record``. The tags: when (``mlops.alias.champion.at``),
    who asked and who approved over which evidence (``mlops.approval.*``), and the version replaced
    (``mlops.previous_champion``), which a rollback returns to.
    """
    found = aliased_version(client, model)
    previous = int(found.version) if found is not None else None
    client.set_registered_model_alias(model, "champion", str(version))
    client.set_model_version_tag(model, str(version), "mlops.alias.champion.at", at)
    for key, value in (
        ("approver", record.approver),
        ("requester", record.requester),
        ("approved_at", record.approved_at.isoformat()),
        ("evidence_digest", record.evidence_digest),
    ):
        client.set_model_version_tag(model, str(version), f"mlops.approval.{key}", value)
    if previous is not None and previous != version:
        client.set_model_version_tag(model, str(version), "mlops.previous_champion", str(previous))
    return previous


class _RegisterArgs(ModelArgs):
    run_id: str = Field(description="MLflow run id of a finished training run (a candidate)")


class _AliasArgs(ModelVersionArgs):
    alias: Alias = Field(description="challenger (needs a passing evaluation) or champion (also an approval)")


class _RemoveAliasArgs(ModelArgs):
    alias: Alias = Field(description="the alias to remove")


class _Registry:
    """The registry operations over one workspace's MLflow store, with their gates."""

    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.uri = ctx.store_uri

    def now(self) -> datetime:
        now: datetime = self.ctx.clock()
        return now

    # --- gates -----------------------------------------------------------------------------

    def register_gate(self, args: Mapping[str, Any]) -> GateResult:
        with using_store(self.uri) as client:
            return GateResult(evaluate_register_gate(training_evidence(client, str(args["run_id"]))))

    def alias_gate(self, args: Mapping[str, Any], *, action: str = "set_alias") -> GateResult:
        model, version = str(args["model"]), int(args["version"])
        alias = args.get("alias", "champion")
        with using_store(self.uri) as client:
            evidence = version_evidence(client, model, version)
        rules = self.ctx.policy.evaluation
        if alias == "challenger":
            return GateResult(evaluate_challenger_gate(evidence, rules=rules, now=self.now(), action=action))
        decision = evaluate_champion_gate(evidence, rules=rules, now=self.now(), action=action)
        return GateResult(decision, evidence_digest(evidence), CHAMPION_ACTION if decision.allowed else "")

    # --- changes ---------------------------------------------------------------------------

    def register(self, model: str, run_id: str) -> dict[str, Any]:
        import mlflow

        with using_store(self.uri) as client:
            evidence = training_evidence(client, run_id)
            decision = evaluate_register_gate(evidence)
            if not decision.allowed:
                raise GateRefusedError(decision)
            run = client.get_run(run_id)
            keep = (
                "mlops.data.digest",
                "mlops.code.git_commit",
                "mlops.code.version",
                "mlops.spec.digest",
                "mlops.pipeline",
                "mlops.split.key",
                "mlops.dataset.path",
                "mlops.task",
                "mlops.target",
                "mlops.target.classes",
                "mlops.metric",
                "mlops.candidate",
            )
            tags = {k: v for k, v in run.data.tags.items() if k in keep}
            tags |= {"mlops.training.run_id": run_id, "mlops.model_id": str(evidence.model_id)}
            version = mlflow.register_model(f"models:/{evidence.model_id}", model, tags=tags)
        return {
            "model": model,
            "version": int(version.version),
            "run_id": run_id,
            "source": version.source,
            "tags": tags,
        }

    def set_alias(self, model: str, version: int, alias: str, *, action: str = "set_alias") -> dict[str, Any]:
        with model_lock(self.ctx.workspace, model), using_store(self.uri) as client:
            record = None
            if alias == "challenger":
                evidence = version_evidence(client, model, version)
                decision = evaluate_challenger_gate(
                    evidence, rules=self.ctx.policy.evaluation, now=self.now(), action=action
                )
            elif alias == "champion":
                decision, record = champion_allowed(self.ctx, client, model, version, action)
            else:
                decision = Decision.deny(
                    action,
                    ReasonCode.ALIAS_NOT_GOVERNED,
                    f"alias {alias!r} is not one this tool sets; use challenger or champion",
                )
            if not decision.allowed:
                raise GateRefusedError(decision)
            stamp = self.now().isoformat()
            if alias == "champion":
                assert record is not None  # the gate above allowed only with one
                previous = set_champion(client, model, version, record, at=stamp)
            else:
                previous = self._alias_version(client, model, alias)
                client.set_registered_model_alias(model, alias, str(version))
                client.set_model_version_tag(model, str(version), f"mlops.alias.{alias}.at", stamp)
        return {
            "model": model,
            "version": version,
            "alias": alias,
            "previous": previous,
            "at": stamp,
            "why": decision.message,
        }

    @staticmethod
    def _alias_version(client: Any, model: str, alias: str) -> int | None:
        found = aliased_version(client, model, alias)
        return int(found.version) if found is not None else None

    def remove_alias(self, model: str, alias: str) -> dict[str, Any]:
        with model_lock(self.ctx.workspace, model), using_store(self.uri) as client:
            previous = self._alias_version(client, model, alias)
            if previous is not None:
                client.delete_registered_model_alias(model, alias)
        return {"model": model, "alias": alias, "removed_from": previous}

    def list_versions(self, model: str) -> list[dict[str, Any]]:
        with using_store(self.uri) as client:
            versions = client.search_model_versions(f"name='{model}'")
            return [
                {
                    "version": int(v.version),
                    "aliases": list(v.aliases),
                    "training_run": v.tags.get("mlops.training.run_id"),
                    "data_digest": v.tags.get("mlops.data.digest"),
                    "code": v.tags.get("mlops.code.git_commit"),
                    "evaluation_run": v.tags.get("mlops.eval.run_id"),
                    "evaluation_passed": v.tags.get("mlops.eval.passed"),
                    "approved_by": v.tags.get("mlops.approval.approver"),
                }
                for v in sorted(versions, key=lambda v: int(v.version))
            ]


def registry_tools(ctx: ToolContext) -> list[GovernedTool]:
    """register_model, set_alias, remove_alias and list_model_versions."""
    registry = _Registry(ctx)

    def register_model(model: str, run_id: str) -> str:
        return to_json(registry.register(model, run_id))

    def set_alias(model: str, version: int, alias: str) -> str:
        return to_json(registry.set_alias(model, version, alias))

    def remove_alias(model: str, alias: str) -> str:
        return to_json(registry.remove_alias(model, alias))

    def list_model_versions(model: str) -> str:
        return to_json(registry.list_versions(model))

    return [
        GovernedTool.from_function(
            "register_model",
            "Register a model version from a finished training run, tagged with its data, code and training run.",
            _RegisterArgs,
            register_model,
            mutates=True,
            gate=registry.register_gate,
        ),
        GovernedTool.from_function(
            "set_alias",
            "Point challenger (needs a passing evaluation of this version) or champion (also needs "
            "an approval) at a version.",
            _AliasArgs,
            set_alias,
            mutates=True,
            gate=registry.alias_gate,
        ),
        GovernedTool.from_function(
            "remove_alias",
            "Remove the challenger or champion alias of a model.",
            _RemoveAliasArgs,
            remove_alias,
            mutates=True,
        ),
        GovernedTool.from_function(
            "list_model_versions",
            "List the versions of a registered model with aliases, lineage and evidence.",
            ModelArgs,
            list_model_versions,
            mutates=False,
        ),
    ]


def promotion_tool(ctx: ToolContext) -> GovernedTool:
    """promote_model: the champion alias behind the evaluation gate and an evidence-bound approval."""
    registry = _Registry(ctx)

    def promote_model(model: str, version: int) -> str:
        promoted = registry.set_alias(model, version, "champion", action="promote_model")
        from mlops_supervisor.tools.serving import ServingBackends  # serving reads the registry's evidence

        backend = ServingBackends(ctx)
        running = {v for v, s in backend.status(model)["versions"].items() if s["alive"]}
        if version in running:
            # full traffic to the champion; the others keep running at 0 for an instant rollback
            promoted["traffic"] = backend.set_weights(model, {v: 100 if v == version else 0 for v in running})
        return to_json(promoted)

    def gate(args: Mapping[str, Any]) -> GateResult:
        return registry.alias_gate({**args, "alias": "champion"}, action="promote_model")

    return GovernedTool.from_function(
        "promote_model",
        "Promote a model version to production (the champion alias); needs a passing evaluation "
        "and an approval by a listed approver other than the requester.",
        ModelVersionArgs,
        promote_model,
        mutates=True,
        gate=gate,
    )
