"""One monitoring pass over a served model: every check its spec watches, alerts routed to its owner, remedies proposed.

``monitor_model`` is what ``mlops-supervisor monitor`` asks the observability agent to run, once
or on a schedule. It reads; it changes nothing in the lifecycle. It first looks at the endpoint
itself: a router or a recorded version that is not running is a critical alert (``error_rate``,
subject ``endpoint_down``) whatever the spec watches. Then it runs the checks the serving
version's spec watches (``monitoring.watch``; all of them when the spec names none): service
metrics (errors, latency), drift of live traffic, and live quality and bias on labelled
predictions. A check that fails is named in ``not_checked`` with its error; the others still run
and their alerts are still delivered.

The alerts go to the owner's route through ``deliver_alerts``, which deduplicates them, retries
the webhook and records each delivery in the audit log. A firing alert resolves only when its own
piece was judged again and found quiet: the version of a service metric, the feature of a drift,
the version of a quality decay, the version and feature of a bias. Alerts are routed only for the
versions the serving state records; an alert of a version that left it (rolled back, replaced)
resolves once and is not raised again.

Where a check finds a breach, the result proposes the remedy (a restart, a rollback, a retrain)
with the exact command. It never acts on it: each is a request of its own, through the same gates
and approvals as any other change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.tools._spec import MonitoringSpec
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.monitoring._alerting import Alert, alert_from_check, deliver_alerts, resolve_route
from mlops_supervisor.tools.monitoring._alerts import runbook
from mlops_supervisor.tools.monitoring._quality import quality_report
from mlops_supervisor.tools.monitoring._tools import _Observer
from mlops_supervisor.tools.registry import aliased_version
from mlops_supervisor.tools.registry._evidence import training_spec
from mlops_supervisor.tools.serving._canary import read_canary

__all__ = ["ENDPOINT_DOWN", "monitor_model"]

_WATCH_ALL = ("latency", "errors", "drift", "quality", "bias")
_KINDS = {
    "errors": ("error_rate",),
    "latency": ("latency",),
    "drift": ("data_drift", "prediction_drift"),
    "quality": ("quality_decay",),
    "bias": ("bias",),
}
ENDPOINT_DOWN = "endpoint_down"
"""The subject of the ``error_rate`` alert raised when the router or a recorded version is not running."""

_T = TypeVar("_T")
_Judged = Callable[[str, int | None, str], bool]


def _serving_version(status: dict[str, Any]) -> int:
    """The version taking the most traffic: among the running versions, else among those recorded (all down).

    Ties go to the higher version number. ``not_serving`` when the serving state records none.
    """
    recorded = [(int(s["weight"]), int(v)) for v, s in status["versions"].items()]
    if not recorded:
        raise InvalidInputError(
            "not_serving", f"{status['model']} serves no version in this workspace; deploy it first"
        )
    alive = [(int(s["weight"]), int(v)) for v, s in status["versions"].items() if s["alive"]]
    return max(alive or recorded)[1]


def _endpoint(model: str, status: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The endpoint's health (router and each recorded version) and, when something is down, its alert."""
    router = status.get("router")
    router_alive = bool(router and router.get("alive"))
    down = sorted(int(v) for v, s in status["versions"].items() if not s["alive"])
    health = {"router_alive": router_alive, "versions_down": down}
    if router_alive and not down:
        return health, []
    what = (["the router"] if not router_alive else []) + [f"version {v}" for v in down]
    book = runbook(model, "the endpoint")
    book["mitigate"] = (
        f"restart what died, as recorded: `mlops-supervisor up {model}`; then find why it died "
        f'(`mlops-supervisor ask "status {model}"`)'
    )
    alert = {
        "kind": "error_rate",
        "subject": ENDPOINT_DOWN,
        "severity": "critical",
        "message": f"{model}'s endpoint is down: {' and '.join(what)} not running; `mlops-supervisor up {model}` "
        "restarts it",
        "down": what,
        "runbook": book,
    }
    return health, [alert]


def _proposals(
    model: str, alerts: list[Alert], *, canary: int | None, champion: int | None, running: list[int]
) -> list[dict[str, str]]:
    """The remedies the breaches call for, each with its command; proposed to whoever reads the report, never run.

    An endpoint that is down is restarted. A breaching canary is rolled back to its stable version; a
    breaching champion only when another version is still running to take its traffic. Drift, decay or
    bias call for a retrain on recent data.
    """
    proposals: list[dict[str, str]] = []
    if any(a.subject == ENDPOINT_DOWN for a in alerts):
        proposals.append(
            {
                "action": "restart",
                "reason": "the router or a version of the endpoint is not running",
                "command": f"mlops-supervisor up {model}",
            }
        )
    breaching = {
        a.version
        for a in alerts
        if a.kind in ("error_rate", "latency", "quality_decay", "bias") and a.version is not None
    }
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


def _attempt(label: str, problems: list[str], run: Callable[[], _T]) -> _T | None:
    """``run()``, or None with the failure named in ``problems``: one check failing never stops the others."""
    try:
        return run()
    except InvalidInputError as exc:
        problems.append(f"{label}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the other checks still run and their alerts are still delivered
        problems.append(f"{label}: {type(exc).__name__}: {exc}")
    return None


def _canary(ctx: ToolContext, model: str, status: dict[str, Any]) -> int | None:
    """The version in canary beside a stable version that still runs (one a rollback can go back to), or None.

    A first production deployment's canary has no stable version, and a failed one is over: neither counts.
    """
    record = read_canary(ctx.workspace, model)
    stable = record.get("stable") if record is not None else None
    if record is None or stable is None or record.get("state") == "failed":
        return None
    running = {int(v) for v, s in status["versions"].items() if s["alive"]}
    version = int(record["version"])
    return version if version in running and int(stable) in running else None


def _spec_monitoring(ctx: ToolContext, model: str, version: int) -> tuple[MonitoringSpec, int | None]:
    """The serving version's spec's ``monitoring`` section and the champion's version number."""
    with using_store(ctx.store_uri) as client:
        tags = client.get_model_version(model, str(version)).tags
        spec = training_spec(client, tags["mlops.training.run_id"])
        found = aliased_version(client, model)
    return spec.monitoring, int(found.version) if found is not None else None


def _quality_judged(report: dict[str, Any]) -> _Judged:
    """Whether a quality or bias alert's piece was judged in ``report``: its version for a decay (and the
    metric, where the report could measure its decay), its version and feature for a bias."""
    versions: dict[str, Any] = report.get("versions") or {}

    def judged(kind: str, version: int | None, subject: str) -> bool:
        row = versions.get(str(version)) or {}
        if not row.get("judged"):
            return False
        if kind == "bias":
            feature = subject.rpartition("/")[0] or subject
            return bool(((row.get("fairness") or {}).get(feature) or {}).get("judged"))
        metric = (row.get("metrics") or {}).get(subject)
        return metric is None or metric.get("decay") is not None

    return judged


def monitor_model(ctx: ToolContext, model: str, *, observer: _Observer | None = None) -> dict[str, Any]:
    """Look at ``model``'s endpoint, run every check its spec watches, route the alerts to its owner, and
    propose remedies.

    ``not_serving`` (exit 2) when the workspace's serving state records no version of ``model``. A
    check that fails is named in ``not_checked`` and resolves nothing; the rest still run.
    """
    observer = observer or _Observer(ctx)
    status = observer.backend.status(model)
    version = _serving_version(status)
    recorded = {int(v) for v in status["versions"]}
    problems: list[str] = []
    found = _attempt("spec", problems, lambda: _spec_monitoring(ctx, model, version))
    spec_monitoring, champion = found if found is not None else (None, None)
    canary = _attempt("canary", problems, lambda: _canary(ctx, model, status))
    watch = (tuple(spec_monitoring.watch) if spec_monitoring is not None else ()) or _WATCH_ALL
    checks: dict[str, Any] = {}
    checked: set[str] = set()
    raised: list[Alert] = []

    health, down = _endpoint(model, status)
    checks["endpoint"] = health
    raised += [alert_from_check(model, a) for a in down]

    def service_check() -> tuple[dict[str, Any], set[str], list[Alert], _Judged]:
        service = observer.metrics(model)
        wanted = {kind for w in ("errors", "latency") if w in watch for kind in _KINDS[w]}
        seen = {int(v) for v in service["versions"]}
        alerts = [alert_from_check(model, a) for a in service["alerts"] if a["kind"] in wanted]
        return service, wanted, alerts, lambda kind, v, s: kind in wanted and s == "" and v in seen

    def drift_check() -> tuple[dict[str, Any], set[str], list[Alert], _Judged]:
        drift = observer.drift(model)
        features = {c for c, row in drift["features"].items() if row.get("judged")}
        predicted = drift.get("prediction") is not None
        kinds = ({"data_drift"} if features else set()) | ({"prediction_drift"} if predicted else set())
        alerts = [alert_from_check(model, a) for a in drift["alerts"]]
        if drift["live_rows"] < ctx.policy.monitoring.min_samples:
            problems.append(
                f"drift: {drift['live_rows']} live rows, fewer than the {ctx.policy.monitoring.min_samples} "
                "the policy needs before drift is judged"
            )
        return (
            drift,
            kinds,
            alerts,
            lambda kind, _v, s: (kind == "data_drift" and s in features) or (kind == "prediction_drift" and predicted),
        )

    def quality_check() -> tuple[dict[str, Any], set[str], list[Alert], _Judged]:
        quality = quality_report(ctx, model)
        wanted = {kind for w in ("quality", "bias") if w in watch for kind in _KINDS[w]}
        if not set(quality["checked"]) & wanted:
            problems.append("quality and bias: " + quality.get("note", "not judged in this window"))
        alerts = [alert_from_check(model, a) for a in quality["alerts"] if a["kind"] in wanted]
        pieces = _quality_judged(quality)
        return quality, set(quality["checked"]) & wanted, alerts, lambda k, v, s: k in wanted and pieces(k, v, s)

    judges: list[_Judged] = []
    for name, label, run, needs in (
        ("service", "service metrics", service_check, ("errors", "latency")),
        ("drift", "drift", drift_check, ("drift",)),
        ("quality", "quality and bias", quality_check, ("quality", "bias")),
    ):
        if not any(w in watch for w in needs):
            continue
        done = _attempt(label, problems, run)
        if done is not None:
            checks[name], kinds, found_alerts, judge = done
            checked |= kinds
            raised += found_alerts
            judges.append(judge)

    # only the versions the serving state records are routed; one that left it resolves once and stays quiet
    alerts = [a for a in raised if a.version is None or a.version in recorded]
    retired = [a for a in raised if a.version is not None and a.version not in recorded]

    def judged(kind: str, version: int | None, subject: str) -> bool:
        if version is not None and version not in recorded:
            return True
        if kind == "error_rate" and subject == ENDPOINT_DOWN:
            return True  # the endpoint is looked at on every pass
        return any(judge(kind, version, subject) for judge in judges)

    route = resolve_route(ctx.policy, model, spec_monitoring)
    delivery = deliver_alerts(ctx, model, route, alerts, checked, judged=judged)
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
        "not_routed": [
            f"{a.kind} of version {a.version}" + (f" ({a.subject})" if a.subject else "") + ": that version no "
            "longer serves"
            for a in retired
        ],
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
