"""One monitoring pass over a served model: every check its spec watches, alerts routed to its owner, remedies proposed.

``monitor_model`` is what ``mlops-supervisor monitor`` asks the observability agent to run, once
or on a schedule. It reads; it changes nothing in the lifecycle. It runs the checks the serving
version's spec watches (``monitoring.watch``; all of them when the spec names none): service
metrics (errors, latency), drift of live traffic, and live quality and bias on labelled
predictions. The alerts they raise go to the owner's route through ``deliver_alerts``, which
deduplicates them, retries the webhook and records each delivery in the audit log; a kind that
was checked and no longer fires is resolved, one that could not be checked resolves nothing.

Where a check finds a breach, the result proposes the remedy (a rollback, a retrain) with the
exact command. It never acts on it: a rollback or a retrain is a request of its own, through the
same gates and approvals as any other change.
"""

from __future__ import annotations

from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.monitoring._alerting import Alert, alert_from_check, deliver_alerts, resolve_route
from mlops_supervisor.tools.monitoring._quality import quality_report
from mlops_supervisor.tools.monitoring._tools import _Observer
from mlops_supervisor.tools.registry import aliased_version
from mlops_supervisor.tools.registry._evidence import training_spec
from mlops_supervisor.tools.serving._canary import read_canary

__all__ = ["monitor_model"]

_WATCH_ALL = ("latency", "errors", "drift", "quality", "bias")
_KINDS = {
    "errors": ("error_rate",),
    "latency": ("latency",),
    "drift": ("data_drift", "prediction_drift"),
    "quality": ("quality_decay",),
    "bias": ("bias",),
}


def _serving_version(status: dict[str, Any]) -> int:
    serving = [(s["weight"], v) for v, s in status["versions"].items() if s["alive"]]
    if not serving:
        raise InvalidInputError(
            "not_serving", f"{status['model']} serves no version in this workspace; deploy it first"
        )
    return int(max(serving)[1])


def _proposals(
    model: str, alerts: list[Alert], *, canary: int | None, champion: int | None, running: list[int]
) -> list[dict[str, str]]:
    """The remedies the breaches call for, each with its command; proposed to whoever reads the report, never run.

    A breaching canary is rolled back to its stable version; a breaching champion only when another
    version is still running to take its traffic. Drift, decay or bias call for a retrain on recent data.
    """
    proposals: list[dict[str, str]] = []
    breaching = {a.version for a in alerts if a.kind in ("error_rate", "latency", "quality_decay", "bias")}
    rollback = f"mlops-supervisor rollback {model}"
    if canary is not None and canary in breaching:
        reason = f"the canary, version {canary}, breaches its limits; traffic goes back to the stable version"
        proposals.append({"action": "rollback", "reason": reason, "command": rollback})
    elif champion is not None and champion in breaching and any(v != champion for v in running):
        reason = f"the champion, version {champion}, breaches its limits; the version it replaced still runs"
        proposals.append({"action": "rollback", "reason": reason, "command": rollback})
    if any(a.kind in ("data_drift", "prediction_drift", "quality_decay", "bias") for a in alerts):
        proposals.append(
            {
                "action": "retrain",
                "reason": "live data or outcomes moved away from what the model learned",
                "command": "mlops-supervisor run SPEC with recent data; the new version is evaluated, deployed "
                "as a canary and promoted through the same gates and approvals",
            }
        )
    return proposals


def monitor_model(ctx: ToolContext, model: str, *, observer: _Observer | None = None) -> dict[str, Any]:
    """Run every check ``model``'s spec watches, route the alerts to its owner, and propose remedies."""
    observer = observer or _Observer(ctx)
    status = observer.backend.status(model)
    version = _serving_version(status)
    with using_store(ctx.store_uri) as client:
        tags = client.get_model_version(model, str(version)).tags
        spec = training_spec(client, tags["mlops.training.run_id"])
        found = aliased_version(client, model)
        champion = int(found.version) if found is not None else None
    canary_record = read_canary(ctx.workspace, model)
    in_canary = canary_record is not None and canary_record.get("state") not in ("failed",)
    canary = int(canary_record["version"]) if canary_record is not None and in_canary else None
    watch = tuple(spec.monitoring.watch) or _WATCH_ALL
    checks: dict[str, Any] = {}
    checked: set[str] = set()
    raised: list[dict[str, Any]] = []
    problems: list[str] = []

    if "errors" in watch or "latency" in watch:
        try:
            service = observer.metrics(model)
        except InvalidInputError as exc:
            problems.append(f"service metrics: {exc}")
        else:
            checks["service"] = service
            wanted = {kind for w in ("errors", "latency") if w in watch for kind in _KINDS[w]}
            checked |= wanted
            raised += [a for a in service["alerts"] if a["kind"] in wanted]
    if "drift" in watch:
        drift = observer.drift(model)
        checks["drift"] = drift
        if drift["live_rows"] >= ctx.policy.monitoring.min_samples:
            checked |= set(_KINDS["drift"])
        else:
            problems.append(
                f"drift: {drift['live_rows']} live rows, fewer than the {ctx.policy.monitoring.min_samples} "
                "the policy needs before drift is judged"
            )
        raised += drift["alerts"]
    if "quality" in watch or "bias" in watch:
        wanted = {kind for w in ("quality", "bias") if w in watch for kind in _KINDS[w]}
        try:
            quality = quality_report(ctx, model)
        except InvalidInputError as exc:  # nothing served has been logged yet
            problems.append(f"quality and bias: {exc}")
        else:
            checks["quality"] = quality
            checked |= set(quality["checked"]) & wanted
            if not set(quality["checked"]) & wanted:
                problems.append("quality and bias: " + quality.get("note", "not judged in this window"))
            raised += [a for a in quality["alerts"] if a["kind"] in wanted]

    alerts = [alert_from_check(model, check) for check in raised]
    route = resolve_route(ctx.policy, model, spec.monitoring)
    delivery = deliver_alerts(ctx, model, route, alerts, checked)
    return {
        "model": model,
        "version": version,
        "champion": champion,
        "canary": canary,
        "watch": list(watch),
        "owner": delivery["owner"],
        "route": delivery["route"],
        "checked": sorted(checked),
        "not_checked": problems,
        "alerts": [a.model_dump(mode="json") | {"fingerprint": a.fingerprint} for a in alerts],
        "delivery": delivery,
        "proposals": _proposals(
            model,
            alerts,
            canary=canary,
            champion=champion,
            running=[int(v) for v, s in status["versions"].items() if s["alive"]],
        ),
        "plots": [c["plot"] for c in checks.values() if isinstance(c, dict) and c.get("plot")],
        "checks": checks,
    }
