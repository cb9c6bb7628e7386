"""A model's canary: its record in ``<workspace>/serving/<model>/canary.json`` and the analysis of one step.

The record says which version climbs which traffic steps beside which stable version, the
step it stands at and when that step started, the thresholds of its analysis, the router's
cumulative counters when the current window opened (``snapshot``), the verdicts so far and
its state (running, passed and held at its last step, or failed). ``window_delta`` turns two
cumulative readings of the router's metrics into one window; ``analysis_in_force`` takes the
stricter of the record's thresholds and the policy's; ``judge`` weighs the canary's window
against the stable version's (``policies.canary``); ``judge_labels`` does the same with the
labelled predictions of the step's window, where feedback gave enough labels for both.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

from mlops_supervisor.policies.canary import (
    CanaryThresholds,
    CanaryVerdict,
    LabelledWindow,
    QualityVerdict,
    VersionWindow,
    analyze_canary,
    analyze_canary_quality,
    quantile_from_buckets,
)
from mlops_supervisor.policies.policy import CanaryRules, MonitoringRules
from mlops_supervisor.tools.core import using_store, write_json_atomic

__all__ = [
    "CanaryRecord",
    "analysis_in_force",
    "canary_path",
    "clear_canary",
    "judge",
    "judge_labels",
    "read_canary",
    "window_delta",
    "write_canary",
]

CanaryState = Literal["running", "passed", "failed"]


class CanaryRecord(TypedDict):
    """A model's latest canary, as ``canary.json`` holds it.

    ``stable`` is None for a first production deployment, whose analysis is a smoke check against
    absolute limits; ``snapshot`` is the router's ``read_window`` when the current window opened,
    ``step_started_at`` when the current step began (the tools' clock). ``state`` is ``passed`` once
    the last step's analysis passed (the weight is held until ``promote_model``), ``failed`` once an
    analysis failed.
    """

    version: int
    stable: int | None
    steps: list[int]
    step: int
    analysis: dict[str, Any]
    snapshot: dict[str, dict[str, Any]]
    started_at: str
    step_started_at: str
    state: CanaryState
    history: list[dict[str, Any]]


def canary_path(workspace: Path, model: str) -> Path:
    """Where ``model``'s canary record lives in ``workspace``."""
    return Path(workspace) / "serving" / model / "canary.json"


def read_canary(workspace: Path, model: str) -> CanaryRecord | None:
    """``model``'s canary in progress, or None when there is none."""
    path = canary_path(workspace, model)
    if not path.exists():
        return None
    record: CanaryRecord = json.loads(path.read_text("utf-8"))
    return record


def write_canary(workspace: Path, model: str, record: CanaryRecord) -> None:
    """Record ``model``'s canary as it stands now."""
    write_json_atomic(canary_path(workspace, model), record)


def clear_canary(workspace: Path, model: str) -> None:
    """Forget ``model``'s canary: it passed, or was rolled back."""
    canary_path(workspace, model).unlink(missing_ok=True)


def window_delta(now: dict[str, Any], then: dict[str, Any] | None) -> VersionWindow:
    """What a version served between two cumulative readings of the router's metrics (``then`` None: since it started)."""
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
    # the +Inf bucket counts as the largest finite bound: a p95 beyond it reads as that bound
    p95 = quantile_from_buckets([*finite, (finite[-1][0] if finite else 0.0, total)], 0.95) if total else None
    return VersionWindow(
        requests=int(now["requests"] - then["requests"]), errors=int(now["errors"] - then["errors"]), p95_seconds=p95
    )


def analysis_in_force(analysis: dict[str, Any], rules: CanaryRules) -> dict[str, Any]:
    """``analysis`` (a spec's, as recorded at deploy) with each threshold at least as strict as ``rules``'.

    The deploy refused a spec looser than the policy; a policy tightened since then still applies here.
    """
    return {
        **analysis,
        "window_seconds": max(float(analysis["window_seconds"]), rules.min_bake_seconds),
        "min_requests": max(int(analysis["min_requests"]), rules.min_requests),
        "max_error_rate_increase": min(float(analysis["max_error_rate_increase"]), rules.max_error_rate_increase),
        "max_p95_latency_ratio": min(float(analysis["max_p95_latency_ratio"]), rules.max_p95_latency_ratio),
    }


def judge(canary: CanaryRecord, now: dict[str, dict[str, Any]], *, canary_alive: bool) -> CanaryVerdict:
    """The verdict on the window since ``canary``'s snapshot, from the router's reading ``now``."""
    version = str(canary["version"])
    stable = str(canary["stable"]) if canary["stable"] is not None else None
    empty: dict[str, Any] = {"requests": 0.0, "errors": 0.0, "buckets": {}}
    window = window_delta(now.get(version, empty), canary["snapshot"].get(version))
    if not canary_alive:
        # a dead canary fails at once: enough errors to be judged, and no fewer requests than errors
        window = window.model_copy(update={"errors": max(window.errors, 5), "requests": max(window.requests, 5)})
    return analyze_canary(
        window,
        window_delta(now.get(stable, empty), canary["snapshot"].get(stable)) if stable else None,
        CanaryThresholds.model_validate(
            {
                "min_requests": canary["analysis"]["min_requests"],
                "max_error_rate_increase": canary["analysis"]["max_error_rate_increase"],
                "max_p95_latency_ratio": canary["analysis"]["max_p95_latency_ratio"],
            }
        ),
    )


def judge_labels(
    workspace: Path, store_uri: str, model: str, canary: CanaryRecord, rules: MonitoringRules
) -> QualityVerdict:
    """The canary's live quality against the stable version's over the labelled predictions of the current step.

    ``not_judged`` without a stable version, without feedback, or with fewer than ``rules.min_labelled``
    labelled predictions of either version since the step started: labels are never waited for.
    """
    # imported here: the monitoring package imports serving's backend, so a module-level import would be circular
    from mlops_supervisor.tools.monitoring._quality import headline_windows, version_classes

    stable = canary["stable"]
    model_dir = Path(workspace) / "serving" / model
    if stable is None:
        return QualityVerdict(verdict="not_judged", reason="labelled quality not judged: no stable version")
    if not any((model_dir / "feedback").glob("*.parquet")):
        return QualityVerdict(verdict="not_judged", reason="labelled quality not judged: no feedback recorded yet")
    version = int(canary["version"])
    with using_store(store_uri) as client:
        tags = {v: client.get_model_version(model, str(v)).tags for v in (version, int(stable))}
    named = {v: version_classes(t) for v, t in tags.items()}
    classes = None if tags[version].get("mlops.task") == "regression" else {v: c or [] for v, c in named.items()}
    since = datetime.fromisoformat(canary.get("step_started_at") or canary["started_at"]).timestamp()
    windows = headline_windows(model_dir, [version, int(stable)], since=since, classes=classes)
    metric: Literal["accuracy", "rmse"] = "rmse" if classes is None else "accuracy"

    def window(v: int) -> LabelledWindow:
        return LabelledWindow(labelled=windows[v][0], metric=metric, value=windows[v][1])

    return analyze_canary_quality(
        window(version), window(int(stable)), min_labelled=rules.min_labelled, max_decay=rules.max_metric_decay
    )
