"""One canary step: judge the window since the last step, then act on the verdict.

pass takes the next traffic step (the last step marks the canary passed, which the champion
gate then accepts), fail rolls back automatically, inconclusive holds.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools.core import ToolContext, model_lock, using_store
from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._canary import CanaryRecord, clear_canary, judge, read_canary, write_canary
from mlops_supervisor.tools.serving._metrics import read_router
from mlops_supervisor.tools.serving._rollback import rollback

__all__ = ["advance"]


def advance(ctx: ToolContext, backend: ServingBackend, model: str) -> dict[str, Any]:
    """Judge ``model``'s canary and step, hold or roll back accordingly: the verdict and what was done."""
    # under the model's lock: two steps at once would both read step k and both write k + 1,
    # and a rollback or deploy in between would have its state overwritten
    with model_lock(ctx.workspace, model):
        canary = read_canary(ctx.workspace, model)
        if canary is None:
            raise InvalidInputError("no_canary", f"{model} has no canary in progress; deploy a version as canary first")
        now = read_router(backend, model)
        alive = backend.status(model)["versions"].get(int(canary["version"]), {}).get("alive", False)
        verdict = judge(canary, now, canary_alive=alive)
        record = {"at": datetime.now(UTC).isoformat(), "step": canary["step"], **verdict.model_dump(mode="json")}
        canary["history"].append(record)
        outcome: dict[str, Any] = {
            "model": model,
            "version": int(canary["version"]),
            "verdict": verdict.verdict,
            "reasons": list(verdict.reasons),
        }
        if verdict.verdict == "fail":
            return {**outcome, "rollback": _fail(ctx, backend, model, canary, verdict.reasons)}
        if verdict.verdict == "inconclusive":
            write_canary(ctx.workspace, model, canary)
            return {**outcome, "weight": canary["steps"][canary["step"]]}
        return {**outcome, **_pass(ctx, backend, model, canary, now, at=record["at"])}


def _fail(
    ctx: ToolContext, backend: ServingBackend, model: str, canary: CanaryRecord, reasons: tuple[str, ...]
) -> str | dict[str, Any]:
    """Roll back to the stable version (under the lock already held); a canary without one is only marked failed."""
    write_canary(ctx.workspace, model, canary)
    if canary["stable"] is None:
        with using_store(ctx.store_uri) as client:
            client.set_model_version_tag(model, str(canary["version"]), "mlops.canary.passed", "false")
        return "none: no earlier version to go back to; fix or stop this version"
    return rollback(ctx, backend, model, reason="canary analysis failed: " + "; ".join(reasons))


def _pass(
    ctx: ToolContext,
    backend: ServingBackend,
    model: str,
    canary: CanaryRecord,
    now: dict[str, dict[str, Any]],
    *,
    at: str,
) -> dict[str, Any]:
    """Take the next traffic step, its window opening at ``now``; past the last step, mark the canary passed."""
    canary["step"] += 1
    canary["snapshot"] = now
    version = str(canary["version"])
    if canary["step"] >= len(canary["steps"]):
        with using_store(ctx.store_uri) as client:
            for key, value in (("passed", "true"), ("at", at), ("history", json.dumps(canary["history"]))):
                client.set_model_version_tag(model, version, f"mlops.canary.{key}", value[:5000])
        clear_canary(ctx.workspace, model)
        return {"canary": "passed", "weight": canary["steps"][-1]}
    weight = canary["steps"][canary["step"]]
    assert canary["stable"] is not None  # a first deployment has the single step 100
    backend.set_weights(model, {int(version): weight, int(canary["stable"]): 100 - weight})
    write_canary(ctx.workspace, model, canary)
    return {"weight": weight}
