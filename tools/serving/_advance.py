"""One canary step: judge the window since the last step, then act on the verdict.

A step is judged with the stricter of the spec's analysis and the policy's canary minimums.
``pass`` counts only once the step has baked its window (``window_seconds``, at least the
policy's ``min_bake_seconds``, measured with the tools' clock): before that it reads as
``inconclusive`` and nothing changes. A pass takes the next traffic step; at the last step below
100 it marks the canary passed (which the champion gate then accepts) and holds that share:
only ``promote_model`` takes a version to 100. ``fail`` acts at once, window open or not (a
canary that is down must come off traffic now): it rolls back automatically unless the policy
denies ``rollback_model``, in which case it records the refusal and leaves traffic as it is.
``inconclusive`` holds. Where feedback gave both versions enough labels in the step's window, a
canary whose live quality is worse than the stable version's past the policy's decay fails too;
with too few labels the quality check says so and changes nothing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from mlops_supervisor.policies import Decision, InvalidInputError, ReasonCode
from mlops_supervisor.policies.canary import CanaryVerdict, QualityVerdict
from mlops_supervisor.tools.core import ToolContext, model_lock, using_store
from mlops_supervisor.tools.serving._backend import ServingBackend
from mlops_supervisor.tools.serving._canary import (
    CanaryRecord,
    analysis_in_force,
    judge,
    judge_labels,
    read_canary,
    write_canary,
)
from mlops_supervisor.tools.serving._rollback import rollback

__all__ = ["advance"]

_ORIGIN = "canary_analysis"


def advance(ctx: ToolContext, backend: ServingBackend, model: str) -> dict[str, Any]:
    """Judge ``model``'s canary and step, hold or roll back accordingly: the verdict and what was done."""
    # under the model's lock: two steps at once would both read step k and both write k + 1,
    # and a rollback or deploy in between would have its state overwritten
    with model_lock(ctx.workspace, model):
        canary = read_canary(ctx.workspace, model)
        if canary is None:
            raise InvalidInputError("no_canary", f"{model} has no canary in progress; deploy a version as canary first")
        state = canary.get("state", "running")
        if state != "running":
            return _settled(model, canary, state)
        now = backend.read_metrics(model)
        alive = backend.status(model)["versions"].get(int(canary["version"]), {}).get("alive", False)
        analysis = analysis_in_force(canary["analysis"], ctx.policy.canary)
        verdict = _within_window(
            judge({**canary, "analysis": analysis}, now, canary_alive=alive),
            canary,
            bake=float(analysis["window_seconds"]),
            at=ctx.clock(),
        )
        quality = judge_labels(ctx.workspace, ctx.store_uri, model, canary, ctx.policy.monitoring)
        verdict = _with_quality(verdict, quality)
        record = {
            "at": ctx.clock().isoformat(),
            "step": canary["step"],
            **verdict.model_dump(mode="json"),
            "quality": quality.model_dump(mode="json"),
        }
        canary["history"].append(record)
        outcome: dict[str, Any] = {
            "model": model,
            "version": int(canary["version"]),
            "verdict": verdict.verdict,
            "reasons": list(verdict.reasons),
            "quality": quality.model_dump(mode="json"),
        }
        if verdict.verdict == "fail":
            return {**outcome, **_fail(ctx, backend, model, canary, verdict.reasons)}
        if verdict.verdict == "inconclusive":
            write_canary(ctx.workspace, model, canary)
            return {**outcome, "weight": canary["steps"][canary["step"]]}
        return {**outcome, **_pass(ctx, backend, model, canary, now, at=record["at"])}


def _within_window(verdict: CanaryVerdict, canary: CanaryRecord, *, bake: float, at: datetime) -> CanaryVerdict:
    """``verdict``, except that a pass before the step has baked ``bake`` seconds is inconclusive."""
    started = datetime.fromisoformat(canary.get("step_started_at") or canary["started_at"])
    baked = (at - started).total_seconds()
    if verdict.verdict != "pass" or baked >= bake:
        return verdict
    return verdict.model_copy(
        update={
            "verdict": "inconclusive",
            "reasons": (f"window open: {max(baked, 0):.0f} s of {bake:g} s", *verdict.reasons),
        }
    )


def _with_quality(verdict: CanaryVerdict, quality: QualityVerdict) -> CanaryVerdict:
    """``verdict``, failed (the quality check's reason first) if the labelled-quality check failed."""
    if quality.verdict != "fail":
        return verdict
    return verdict.model_copy(update={"verdict": "fail", "reasons": (quality.reason, *verdict.reasons)})


def _settled(model: str, canary: CanaryRecord, state: str) -> dict[str, Any]:
    """What a step on a canary already passed or failed answers: its state, nothing changed."""
    version, weight = int(canary["version"]), canary["steps"][canary["step"]]
    if state == "passed":
        reason = f"the canary of version {version} passed at {weight} %; next: {_after_passing(model, version, weight)}"
    else:
        reason = f"the canary of version {version} failed; deploy a version again to start a new one"
    return {
        "model": model,
        "version": version,
        "verdict": state,
        "canary": state,
        "reasons": [reason],
        "weight": weight,
    }


def _after_passing(model: str, version: int, weight: int) -> str:
    """What takes a passed canary further: only the champion gate moves it to all traffic."""
    if weight >= 100:
        return "nothing: it serves all traffic"
    return f"`promote {model} version {version} to production` (the champion gate, with an approval) takes it to 100 %"


def _fail(
    ctx: ToolContext, backend: ServingBackend, model: str, canary: CanaryRecord, reasons: tuple[str, ...]
) -> dict[str, Any]:
    """Roll back to the stable version (under the lock already held) if the policy allows; else leave traffic.

    A canary without a stable version is only marked failed: there is nothing to go back to.
    """
    canary["state"] = "failed"
    write_canary(ctx.workspace, model, canary)
    version, stable = int(canary["version"]), canary["stable"]
    if stable is None:
        _mark_failed(ctx, model, version)
        return {"rollback": "none: no earlier version to go back to; fix or stop this version"}
    why = "canary analysis failed: " + "; ".join(reasons)
    if "rollback_model" in ctx.policy.tools.denied:
        _mark_failed(ctx, model, version)
        weights = {v: s["weight"] for v, s in backend.status(model)["versions"].items()}
        left = ", ".join(f"version {v} at {w} %" for v, w in sorted(weights.items())) or "nothing serving"
        decision = Decision.deny(
            "rollback_model",
            ReasonCode.TOOL_DENIED_BY_POLICY,
            f"{why}; the automatic rollback of {model} to version {stable} is denied by the policy (tools.denied); "
            "traffic was left as it is",
        )
        _audit_decision(ctx, model, version, decision)
        return {
            "rollback": "none: rollback_model is denied by the policy (tools.denied)",
            "traffic": f"left as it is: {left}",
            "decision": decision.as_record(),
            "next": f"take version {version} off traffic: a policy that allows rollback_model, then "
            f"`mlops-supervisor rollback {model}`; or stop the endpoint with `mlops-supervisor down {model}`",
        }
    _audit_decision(ctx, model, version, Decision.allow("rollback_model", f"{why}; rolling back to version {stable}"))
    return {"rollback": rollback(ctx, backend, model, reason=why)}


def _audit_decision(ctx: ToolContext, model: str, version: int, decision: Decision) -> None:
    """The decision on the automatic rollback, as a ``decision`` line of the audit log."""
    ctx.audit.append("decision", origin=_ORIGIN, args={"model": model}, version=version, **decision.as_record())


def _mark_failed(ctx: ToolContext, model: str, version: int) -> None:
    with using_store(ctx.store_uri) as client:
        client.set_model_version_tag(model, str(version), "mlops.canary.passed", "false")


def _pass(
    ctx: ToolContext,
    backend: ServingBackend,
    model: str,
    canary: CanaryRecord,
    now: dict[str, dict[str, Any]],
    *,
    at: str,
) -> dict[str, Any]:
    """Take the next traffic step, its window opening now; at the last step, mark the canary passed and hold."""
    canary["snapshot"] = now
    version = str(canary["version"])
    if canary["step"] + 1 >= len(canary["steps"]):
        with using_store(ctx.store_uri) as client:
            for key, value in (("passed", "true"), ("at", at), ("history", json.dumps(canary["history"]))):
                client.set_model_version_tag(model, version, f"mlops.canary.{key}", value[:5000])
        canary["state"] = "passed"
        write_canary(ctx.workspace, model, canary)
        held = canary["steps"][canary["step"]]
        return {"canary": "passed", "weight": held, "next": _after_passing(model, int(version), held)}
    canary["step"] += 1
    canary["step_started_at"] = ctx.clock().isoformat()
    weight = canary["steps"][canary["step"]]
    assert canary["stable"] is not None  # a first deployment has the single step 100
    backend.set_weights(model, {int(version): weight, int(canary["stable"]): 100 - weight})
    write_canary(ctx.workspace, model, canary)
    return {"weight": weight}
