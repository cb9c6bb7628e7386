"""The deployment agent's tools: canary deploys, analysis between traffic steps, rollback, status.

``deploy_model`` needs a passing evaluation of the version (the challenger gate, re-run in
the tool). The first version of a model takes all traffic; a later one starts as a canary at
the first of the spec's ``deployment.canary_steps``. ``advance_canary`` judges the canary's
window of traffic against the stable version's (``policies.canary``): pass takes the next
step (the last step marks the canary passed, which the champion gate then accepts), fail
rolls back automatically, inconclusive holds. ``rollback_model`` restores the last
known-good version in traffic and in the ``champion`` alias together, as one recorded action.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import Field

from mlops_supervisor.policies import GateRefusedError, InvalidInputError
from mlops_supervisor.policies.canary import CanaryThresholds, VersionWindow, analyze_canary, quantile_from_buckets
from mlops_supervisor.policies.gates import evaluate_challenger_gate
from mlops_supervisor.tools._spec import DeploymentSpec, PipelineSpec
from mlops_supervisor.tools.core import (
    GateResult,
    GovernedTool,
    ModelArgs,
    ModelVersionArgs,
    ToolContext,
    model_lock,
    to_json,
    using_store,
    write_json_atomic,
)
from mlops_supervisor.tools.registry import aliased_version, version_evidence
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._metrics import read_window

__all__ = ["deployment_tools"]


class _DeployArgs(ModelVersionArgs):
    target: str = Field(default="canary", description="canary (a share of traffic) or staging (all traffic)")


def _delta(now: dict[str, Any], then: dict[str, Any] | None) -> VersionWindow:
    then = then or {"requests": 0.0, "errors": 0.0, "buckets": {}}
    buckets = sorted(
        (
            (float("inf") if le == "+Inf" else float(le), count - then["buckets"].get(le, 0.0))
            for le, count in now["buckets"].items()
        ),
        key=lambda b: b[0],
    )
    finite = [(bound, count) for bound, count in buckets if bound != float("inf")]
    total = buckets[-1][1] if buckets else 0.0
    p95 = quantile_from_buckets([*finite, (finite[-1][0] if finite else 0.0, total)], 0.95) if total else None
    return VersionWindow(
        requests=int(now["requests"] - then["requests"]), errors=int(now["errors"] - then["errors"]), p95_seconds=p95
    )


class _Deployer:
    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.uri = ctx.store_uri
        self.backend = LocalBackend.for_workspace(ctx.workspace, self.uri)

    def _canary_path(self, model: str) -> Path:
        return Path(self.ctx.workspace) / "serving" / model / "canary.json"

    def _canary(self, model: str) -> dict[str, Any] | None:
        path = self._canary_path(model)
        return json.loads(path.read_text("utf-8")) if path.exists() else None

    def _save_canary(self, model: str, value: dict[str, Any] | None) -> None:
        path = self._canary_path(model)
        if value is None:
            path.unlink(missing_ok=True)
            return
        write_json_atomic(path, value)

    def _metrics(self, model: str) -> dict[str, dict[str, Any]]:
        router = self.backend.status(model)["router"]
        if not router or not router["alive"]:
            return {}
        return read_window(httpx.get(f"{router['url']}/metrics", timeout=10).text)

    def _deployment_spec(self, client: Any, model: str, version: int) -> DeploymentSpec:
        run_id = client.get_model_version(model, str(version)).tags.get("mlops.training.run_id")
        if not run_id:
            return DeploymentSpec()
        with tempfile.TemporaryDirectory() as tmp:
            text = Path(client.download_artifacts(run_id, "spec.yaml", tmp)).read_text("utf-8")
        return PipelineSpec.model_validate(yaml.safe_load(text)).deployment

    def gate(self, args: dict[str, Any]) -> GateResult:
        with using_store(self.uri) as client:
            evidence = version_evidence(client, str(args["model"]), int(args["version"]))
        return GateResult(
            evaluate_challenger_gate(
                evidence,
                max_age_hours=self.ctx.policy.evaluation.max_age_hours,
                now=self.ctx.clock(),
                action="deploy_model",
            )
        )

    def deploy(self, model: str, version: int, target: str) -> dict[str, Any]:
        if target not in {"canary", "staging"}:
            raise InvalidInputError("invalid_target", f"target {target!r} is not allowed; use canary or staging")
        with model_lock(self.ctx.workspace, model):
            gated = self.gate({"model": model, "version": version})
            if not gated.decision.allowed:
                raise GateRefusedError(gated.decision)
            with using_store(self.uri) as client:
                source = client.get_model_version(model, str(version)).source
                plan = self._deployment_spec(client, model, version)
            status = self.backend.status(model)
            stable = [v for v, s in status["versions"].items() if s["alive"] and s["weight"] > 0 and v != version]
            # With nothing else serving (or for staging) the version takes all traffic at once, and its
            # analysis is a smoke check against absolute limits; otherwise it climbs the canary steps.
            steps = [100] if not stable or target == "staging" else list(plan.canary_steps)
            weight = steps[0]
            result = self.backend.deploy(model, version, source, weight=weight)
            with using_store(self.uri) as client:
                client.set_model_version_tag(model, str(version), "mlops.deployed.at", datetime.now(UTC).isoformat())
                client.set_model_version_tag(model, str(version), "mlops.canary.passed", "pending")
            canary = {
                "version": version,
                "stable": stable[0] if stable and target != "staging" else None,
                "steps": steps,
                "step": 0,
                "analysis": plan.analysis.model_dump(),
                "snapshot": self._metrics(model),
                "started_at": datetime.now(UTC).isoformat(),
                "history": [],
            }
            self._save_canary(model, canary)
        return {
            "model": model,
            "version": version,
            "role": "canary" if canary["stable"] else "first",
            "weight": weight,
            "steps": steps,
            "stable": canary["stable"],
            "status": result,
        }

    def advance(self, model: str) -> dict[str, Any]:
        # under the model's lock: two steps at once would both read step k and both write k + 1,
        # and a rollback or deploy in between would have its state overwritten
        with model_lock(self.ctx.workspace, model):
            return self._advance(model)

    def _advance(self, model: str) -> dict[str, Any]:
        canary = self._canary(model)
        if canary is None:
            raise InvalidInputError("no_canary", f"{model} has no canary in progress; deploy a version as canary first")
        now = self._metrics(model)
        version = str(canary["version"])
        stable = str(canary["stable"]) if canary["stable"] is not None else None
        empty = {"requests": 0.0, "errors": 0.0, "buckets": {}}
        alive = self.backend.status(model)["versions"].get(int(version), {}).get("alive", False)
        window = _delta(now.get(version, empty), canary["snapshot"].get(version))
        if not alive:
            window = window.model_copy(update={"errors": max(window.errors, 5), "requests": max(window.requests, 5)})
        verdict = analyze_canary(
            window,
            _delta(now.get(stable, empty), canary["snapshot"].get(stable)) if stable else None,
            CanaryThresholds.model_validate(
                {
                    "min_requests": canary["analysis"]["min_requests"],
                    "max_error_rate_increase": canary["analysis"]["max_error_rate_increase"],
                    "max_p95_latency_ratio": canary["analysis"]["max_p95_latency_ratio"],
                }
            ),
        )
        record = {"at": datetime.now(UTC).isoformat(), "step": canary["step"], **verdict.model_dump(mode="json")}
        canary["history"].append(record)
        outcome: dict[str, Any] = {
            "model": model,
            "version": int(version),
            "verdict": verdict.verdict,
            "reasons": list(verdict.reasons),
        }
        if verdict.verdict == "fail":
            self._save_canary(model, canary)
            reason = "canary analysis failed: " + "; ".join(verdict.reasons)
            if stable is None:
                with using_store(self.uri) as client:
                    client.set_model_version_tag(model, version, "mlops.canary.passed", "false")
                outcome["rollback"] = "none: no earlier version to go back to; fix or stop this version"
                return outcome
            outcome["rollback"] = self.rollback(model, reason=reason)
            return outcome
        if verdict.verdict == "inconclusive":
            self._save_canary(model, canary)
            outcome["weight"] = canary["steps"][canary["step"]]
            return outcome
        canary["step"] += 1
        canary["snapshot"] = now
        if canary["step"] >= len(canary["steps"]):
            with using_store(self.uri) as client:
                for key, value in (
                    ("passed", "true"),
                    ("at", record["at"]),
                    ("history", json.dumps(canary["history"])),
                ):
                    client.set_model_version_tag(model, version, f"mlops.canary.{key}", value[:5000])
            self._save_canary(model, None)
            outcome["canary"] = "passed"
            outcome["weight"] = canary["steps"][-1]
            return outcome
        weight = canary["steps"][canary["step"]]
        assert stable is not None  # a first deployment has the single step 100
        self.backend.set_weights(model, {int(version): weight, int(stable): 100 - weight})
        self._save_canary(model, canary)
        outcome["weight"] = weight
        return outcome

    def rollback(self, model: str, *, reason: str = "requested") -> dict[str, Any]:
        with model_lock(self.ctx.workspace, model), using_store(self.uri) as client:
            found = aliased_version(client, model)
            champion = int(found.version) if found is not None else None
            canary = self._canary(model)
            status = self.backend.status(model)
            running = [v for v, s in status["versions"].items() if s["alive"]]
            bad = int(canary["version"]) if canary else champion
            good = int(canary["stable"]) if canary else None
            if good is None and champion is not None:
                previous = client.get_model_version(model, str(champion)).tags.get("mlops.previous_champion")
                good = int(previous) if previous else None
            if good is None or good not in running:
                raise InvalidInputError(
                    "no_known_good_version",
                    f"{model} has no last known-good version running to roll back to (running: {running or 'none'})",
                )
            result = self.backend.rollback(model, good)
            moved = None
            if champion is not None and champion != good and champion == bad:
                client.set_registered_model_alias(model, "champion", str(good))
                moved = {"from": champion, "to": good}
            stamp = datetime.now(UTC).isoformat()
            if bad is not None:
                client.set_model_version_tag(model, str(bad), "mlops.rollback.at", stamp)
                client.set_model_version_tag(model, str(bad), "mlops.rollback.reason", reason[:4000])
                client.set_model_version_tag(model, str(bad), "mlops.canary.passed", "false")
            self._save_canary(model, None)
        self.ctx.audit.append(
            "rollback", model=model, to_version=good, from_version=bad, champion_moved=moved, reason=reason
        )
        return {
            "model": model,
            "to_version": good,
            "from_version": bad,
            "champion": moved,
            "reason": reason,
            "status": result,
        }


def deployment_tools(ctx: ToolContext) -> list[GovernedTool]:
    """deploy_model, advance_canary, rollback_model and endpoint_status."""
    deployer = _Deployer(ctx)

    def deploy_model(model: str, version: int, target: str = "canary") -> str:
        return to_json(deployer.deploy(model, version, target))

    def advance_canary(model: str) -> str:
        return to_json(deployer.advance(model))

    def rollback_model(model: str) -> str:
        return to_json(deployer.rollback(model))

    def endpoint_status(model: str) -> str:
        return to_json({**deployer.backend.status(model), "canary": deployer._canary(model)})

    return [
        GovernedTool.from_function(
            "deploy_model",
            "Deploy an evaluated version: all traffic when it is the first, else a canary at the first traffic step.",
            _DeployArgs,
            deploy_model,
            mutates=True,
            gate=deployer.gate,
        ),
        GovernedTool.from_function(
            "advance_canary",
            "Judge the canary's traffic window against stable: pass takes the next step, fail "
            "rolls back automatically, inconclusive holds.",
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
            "Versions, weights, processes and canary progress of a model's endpoint.",
            ModelArgs,
            endpoint_status,
            mutates=False,
        ),
    ]
