"""Live quality and bias: labelled predictions per version, against the version's own evaluation and the policy.

``labelled_predictions`` joins the router's prediction log with the feedback store on
``(request_id, row)``; ``live_metrics`` scores one version's labelled rows with the evaluation's
metrics; ``metric_decay`` sets them beside the version's evaluation (``mlops.eval.metric.*``) and the
policy's tolerance; ``live_fairness`` computes fairlearn's differences per sensitive feature against
the policy's limits (``group_fairness``: fairlearn over the distinct cells, weighted by their rows); ``quality_alerts`` turns breaches
into alerts with a runbook; ``quality_report`` does all of it for every version in the window.
``headline_windows`` gives canary analysis the one number per version it compares.

Decay is absolute for the metrics bounded by 0 and 1 and relative to the evaluation's value for the
unbounded losses (``rmse``, ``mae``), whose absolute size depends on the target's units.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.floors import LOSSES
from mlops_supervisor.policies.policy import MonitoringRules
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.evaluation._scoring import calibration
from mlops_supervisor.tools.monitoring._alerts import runbook
from mlops_supervisor.tools.serving import read_feedback, read_predictions

__all__ = [
    "RELATIVE_DECAY",
    "assess_version",
    "group_fairness",
    "headline_windows",
    "join_feedback",
    "labelled_predictions",
    "live_fairness",
    "live_metrics",
    "live_quality",
    "metric_decay",
    "quality_alerts",
    "quality_report",
    "version_classes",
]

RELATIVE_DECAY = frozenset({"rmse", "mae"})
"""Metrics whose decay is measured relative to the evaluation's value (unbounded, in the target's units)."""

_ATTR = "attr."


# -- reading ------------------------------------------------------------------------------------


def _contract(model_dir: Path) -> dict[str, Any] | None:
    """The model's feedback contract (``feedback.json``), or None when it has none (labels then need ``classes``)."""
    path = model_dir / "feedback.json"
    if not path.exists():
        return None
    contract: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return contract


def labelled_predictions(
    model_dir: Path, *, since: float | None, classes: Mapping[int, Sequence[str]] | None = None
) -> pd.DataFrame:
    """Predictions with ``ts >= since`` inner-joined with their feedback on ``(request_id, row)``.

    A classifier's label (a class name) becomes ``label_index`` by the version's classes: ``classes``
    (version -> class names, in index order), else those of the feedback contract; a label that is
    not one of its version's classes cannot be scored and is left out. A regressor keeps ``label``
    as a float.
    """
    return join_feedback(read_predictions(model_dir, since), read_feedback(model_dir), model_dir, classes)


def join_feedback(
    predictions: pd.DataFrame,
    feedback: pd.DataFrame,
    model_dir: Path,
    classes: Mapping[int, Sequence[str]] | None = None,
) -> pd.DataFrame:
    """``labelled_predictions`` over frames already read (the contract in ``model_dir`` gives missing classes)."""
    if "label" not in feedback.columns or predictions.empty:
        return predictions.iloc[0:0].assign(label=pd.Series(dtype="float64"))
    joined = predictions.merge(feedback, on=["request_id", "row"], how="inner")
    if pd.api.types.is_numeric_dtype(joined["label"]):
        joined["label"] = joined["label"].astype("float64")
        return joined
    contract = _contract(model_dir) or {}
    known = {int(v): list(c.get("classes") or []) for v, c in (contract.get("versions") or {}).items()}
    known |= {int(v): list(c) for v, c in (classes or {}).items()}
    versions = joined["version"].to_numpy()
    present = np.unique(versions)
    shared = {tuple(known.get(int(v), ())) for v in present}
    if len(shared) == 1:  # the usual case: every version in the window has the same classes; one pass
        index = pd.Categorical(joined["label"], categories=list(shared.pop())).codes.astype(np.int64)
    else:
        index = np.full(len(joined), -1, dtype=np.int64)
        labels = joined["label"].to_numpy()
        for v in present:
            mask = versions == v
            index[mask] = pd.Categorical(labels[mask], categories=known.get(int(v), [])).codes
    joined["label_index"] = index
    return joined if (index >= 0).all() else joined[index >= 0].reset_index(drop=True)


# -- judging ------------------------------------------------------------------------------------


def _proba(frame: pd.DataFrame, n_classes: int | None = None) -> np.ndarray | None:
    """The rows' class probabilities (one column per class), or None when some row has none.

    Only the first ``n_classes`` columns are read when it is given: in a window where versions
    with more classes served too, the log has more columns than this version's rows fill.
    """
    columns = sorted((c for c in frame.columns if c.startswith("proba_")), key=lambda c: int(c.split("_")[1]))
    if n_classes is not None:
        columns = columns[:n_classes]
        if len(columns) < n_classes:
            return None
    if not columns:
        return None
    matrix = frame[columns].to_numpy(dtype="float64")
    return None if np.isnan(matrix).any() else matrix


def live_metrics(frame: pd.DataFrame, *, classification: bool, n_classes: int | None = None) -> dict[str, float | None]:
    """The evaluation's metrics on labelled rows (at least one); None where the rows cannot give one.

    Classification: accuracy, f1 (the positive class, index 1, for two classes; macro past two), and
    with probabilities roc_auc (one-vs-rest past two classes), and for two classes brier_score and
    expected_calibration_error. Regression: rmse and mae. Rounded to 6 places like the evaluation's.
    ``n_classes`` is the version's number of classes; without it, the probabilities' columns or the
    largest index seen say it.
    """
    from sklearn import metrics as m

    if not classification:
        y, pred = frame["label"].to_numpy("float64"), frame["prediction"].to_numpy("float64")
        return {
            "rmse": round(float(np.sqrt(m.mean_squared_error(y, pred))), 6),
            "mae": round(float(m.mean_absolute_error(y, pred)), 6),
        }
    y = frame["label_index"].to_numpy(np.int64)
    pred = frame["prediction"].to_numpy(np.int64)
    proba = _proba(frame, n_classes)
    if n_classes is None:
        n_classes = proba.shape[1] if proba is not None else int(max(y.max(), pred.max())) + 1
    binary = n_classes <= 2
    out: dict[str, float | None] = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "f1": float(m.f1_score(y, pred, average="binary" if binary else "macro", zero_division=0)),
        "roc_auc": None,
        "brier_score": None,
        "expected_calibration_error": None,
    }
    both = len(np.unique(y)) >= 2  # ROC AUC needs both outcomes among the labels
    if proba is not None and binary:
        out["roc_auc"] = float(m.roc_auc_score(y, proba[:, 1])) if both else None
        out["brier_score"] = float(m.brier_score_loss(y, proba[:, 1], labels=[0, 1]))
        out["expected_calibration_error"] = calibration(y, proba[:, 1])["expected_calibration_error"]
    elif proba is not None and len(np.unique(y)) == proba.shape[1]:  # one-vs-rest needs every class labelled
        out["roc_auc"] = float(m.roc_auc_score(y, proba, multi_class="ovr"))
    return {k: None if v is None else round(v, 6) for k, v in out.items()}


def metric_decay(
    live: Mapping[str, float | None], evaluation: Mapping[str, float], max_decay: float
) -> dict[str, dict[str, Any]]:
    """Each live metric beside the version's evaluation value: the decay and whether it is over ``max_decay``.

    Decay is how much worse live is: a drop for a score, a rise for a loss (``LOSSES``); relative to
    the evaluation's value for ``RELATIVE_DECAY``, absolute otherwise. A metric the evaluation did not
    record, or live rows could not give, has no decay and is never over.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, value in live.items():
        base = evaluation.get(name)
        decay = None
        if value is not None and base is not None:
            worse = value - base if name in LOSSES else base - value
            decay = worse / abs(base) if name in RELATIVE_DECAY and base else worse
        out[name] = {
            "live": value,
            "evaluation": base,
            "decay": None if decay is None else round(decay, 6),
            "relative": name in RELATIVE_DECAY,
            "over": decay is not None and decay > max_decay,
        }
    return out


def live_fairness(
    frame: pd.DataFrame,
    features: Sequence[str],
    limits: Mapping[str, float],
    *,
    min_labelled: int,
    min_group_labelled: int = 1,
    n_classes: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Per sensitive feature: fairlearn's differences against ``limits``, with the per-group rates and counts.

    Only rows whose feedback gave the feature count; a feature with fewer than ``min_labelled`` of
    them is not judged (``judged`` False, ``labelled`` says how many, ``reason`` why). A group with
    fewer than ``min_group_labelled`` labelled rows is left out of the differences and named in
    ``not_judged`` (one labelled row of a made-up group would otherwise decide them); a feature
    left with fewer than two groups is not judged. The numbers are those of the evaluation's
    ``assess_fairness`` on the same rows (see ``group_fairness``). ``n_classes`` is the model's
    number of classes (equalized odds needs two); without it, the largest class index seen says it.
    """
    out: dict[str, dict[str, Any]] = {}
    y = frame["label_index"].to_numpy(np.int64)
    pred = frame["prediction"].to_numpy(np.int64)
    if n_classes is None:
        n_classes = int(max(y.max(), pred.max())) + 1 if len(y) else 2
    binary = n_classes <= 2
    for feature in features:
        column = f"{_ATTR}{feature}"
        if column not in frame.columns:
            out[feature] = {"labelled": 0, "judged": False, "reason": f"no label gave {feature!r}"}
            continue
        given = frame[column].notna().to_numpy()
        count = int(given.sum())
        if count < min_labelled:
            out[feature] = {
                "labelled": count,
                "judged": False,
                "reason": f"{count} labelled predictions give {feature!r}; at least {min_labelled} needed",
            }
            continue
        groups = frame[column][given].astype(str)
        sizes = groups.value_counts(sort=False)
        small = sizes[sizes < min_group_labelled].sort_index()
        not_judged = [f"group {g!r} has {n} labelled, fewer than {min_group_labelled}" for g, n in small.items()]
        keep = given.copy()
        if len(small):
            keep[given] = ~groups.isin(small.index).to_numpy()
        if len(sizes) - len(small) < 2:
            out[feature] = {
                "labelled": count,
                "judged": False,
                "reason": f"fewer than two groups of {feature!r} have {min_group_labelled} labelled predictions",
                "not_judged": not_judged,
            }
            continue
        every = bool(keep.all())
        result = group_fairness(
            y if every else y[keep],
            pred if every else pred[keep],
            frame[column].astype(str) if every else frame[column][keep].astype(str),
            limits,
            binary=binary,
        )
        out[feature] = {"labelled": count, "judged": True, **result}
        if not_judged:
            out[feature]["not_judged"] = not_judged
    return out


def group_fairness(
    y: np.ndarray, pred: np.ndarray, groups: pd.Series, limits: Mapping[str, float], *, binary: bool
) -> dict[str, Any]:
    """fairlearn's checks and per-group metrics (count, accuracy, selection rate; TPR and FPR for two classes).

    Every one of these metrics is a ratio of counts, so fairlearn is given each distinct (group,
    label, prediction) cell once, weighted by how many rows fall in it: the same numbers as over the
    rows themselves (the tests compare them with ``assess_fairness``), without fairlearn's per-row
    work on a million rows.
    """
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    name = groups.name if isinstance(groups.name, str) else "group"
    cells = (
        pd.DataFrame({name: groups.to_numpy(), "y": y, "pred": pred})
        .groupby([name, "y", "pred"], sort=True, observed=True)
        .size()
        .reset_index(name="rows")
    )
    cy, cp, cg = cells["y"].to_numpy(), cells["pred"].to_numpy(), cells[name]
    weight = cells["rows"].to_numpy("float64")
    functions: dict[str, Any] = {"accuracy": accuracy_score, "selection_rate": selection_rate}
    if binary:
        functions |= {"true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate}
    frame = MetricFrame(
        metrics=functions,
        y_true=cy,
        y_pred=cp,
        sensitive_features=cg,
        sample_params={k: {"sample_weight": weight} for k in functions},
    )
    by_group = frame.by_group
    by_group.insert(0, "count", cells.groupby(name, sort=True, observed=True)["rows"].sum())
    values = {
        "demographic_parity_difference": float(
            demographic_parity_difference(cy, cp, sensitive_features=cg, sample_weight=weight)
        )
    }
    if binary:
        values["equalized_odds_difference"] = float(
            equalized_odds_difference(cy, cp, sensitive_features=cg, sample_weight=weight)
        )
    # the unrounded difference is judged, so one a hair over its limit fails though it rounds to it
    checks = {
        key: {
            "value": round(value, 6),
            "limit": limits.get(key),
            "passed": limits.get(key) is None or value <= limits[key],
        }
        for key, value in values.items()
    }
    rows = json.loads(by_group.reset_index().rename(columns={name: "group"}).to_json(orient="records"))
    return {"checks": checks, "by_group": rows}


def quality_alerts(
    model: str,
    version: int,
    metrics: Mapping[str, Mapping[str, Any]],
    fairness: Mapping[str, Mapping[str, Any]],
    max_decay: float,
) -> list[dict[str, Any]]:
    """One ``quality_decay`` alert per metric over the tolerance and one ``bias`` alert per difference over its limit."""
    alerts: list[dict[str, Any]] = []
    for name, row in metrics.items():
        if row["over"]:
            unit = " of the evaluation's value" if row["relative"] else ""
            alerts.append(
                {
                    "kind": "quality_decay",
                    "version": version,
                    "metric": name,
                    "value": row["live"],
                    "evaluation": row["evaluation"],
                    "decay": row["decay"],
                    "limit": max_decay,
                    "message": f"version {version} live {name} {row['live']:.4f} against {row['evaluation']:.4f} at "
                    f"evaluation: decay {row['decay']:.4f} over the tolerance {max_decay:g}{unit}",
                    "runbook": runbook(model, f"live {name}"),
                }
            )
    for feature, result in fairness.items():
        for name, check in (result.get("checks") or {}).items():
            if not check["passed"]:
                alerts.append(
                    {
                        "kind": "bias",
                        "version": version,
                        "feature": feature,
                        "metric": name,
                        "value": check["value"],
                        "limit": check["limit"],
                        "message": f"version {version} {name} by {feature} {check['value']:.4f} over the limit "
                        f"{check['limit']:g} on live labelled predictions",
                        "runbook": runbook(model, f"bias by {feature}"),
                    }
                )
    return alerts


def assess_version(
    model: str,
    version: int,
    frame: pd.DataFrame,
    *,
    classes: Sequence[str] | None,
    evaluation: Mapping[str, float],
    features: Sequence[str],
    rules: MonitoringRules,
) -> dict[str, Any]:
    """One version's labelled rows judged: count, metrics beside its evaluation, fairness, alerts.

    ``classes`` None means a regressor. Fewer than ``rules.min_labelled`` rows: not judged, and the
    reason says how many there are.
    """
    labelled = len(frame)
    if labelled < rules.min_labelled:
        return {
            "labelled": labelled,
            "judged": False,
            "reason": f"{labelled} labelled predictions in the window; at least {rules.min_labelled} needed",
            "alerts": [],
        }
    classification = classes is not None
    live = live_metrics(frame, classification=classification, n_classes=len(classes) if classes else None)
    metrics = metric_decay(live, evaluation, rules.max_metric_decay)
    fairness = (
        live_fairness(
            frame,
            features,
            rules.fairness,
            min_labelled=rules.min_labelled,
            min_group_labelled=rules.min_group_labelled,
            n_classes=len(classes),
        )
        if classes is not None
        else {}
    )
    result: dict[str, Any] = {"labelled": labelled, "judged": True, "metrics": metrics, "fairness": fairness}
    if not evaluation:
        result["note"] = "the version has no evaluation metrics recorded: nothing to measure decay against"
    result["alerts"] = quality_alerts(model, version, metrics, fairness, rules.max_metric_decay)
    return result


def _version_tags(store_uri: str, model: str, versions: Sequence[int]) -> dict[int, dict[str, str] | None]:
    """Each version's MLflow tags; None for a version the registry does not hold."""
    from mlops_supervisor.tools.registry._evidence import model_version

    out: dict[int, dict[str, str] | None] = {}
    with using_store(store_uri) as client:
        for version in versions:
            try:
                out[version] = dict(model_version(client, model, version).tags)
            except InvalidInputError:
                out[version] = None
    return out


def version_classes(tags: Mapping[str, str]) -> list[str] | None:
    """A version's class names in index order (``mlops.target.classes``); None for a regressor."""
    if tags.get("mlops.task") == "regression":
        return None
    raw = tags.get("mlops.target.classes")
    return [str(c) for c in json.loads(raw)] if raw else None


def _evaluation_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    prefix = "mlops.eval.metric."
    return {k.removeprefix(prefix): float(v) for k, v in tags.items() if k.startswith(prefix)}


def quality_report(ctx: ToolContext, model: str) -> dict[str, Any]:
    """``live_quality`` of ``model`` in ``ctx``'s workspace, under its policy's ``monitoring`` rules, at its clock."""
    return live_quality(ctx.workspace, model, rules=ctx.policy.monitoring, store_uri=ctx.store_uri, now=ctx.clock())


def live_quality(
    workspace: Path, model: str, *, rules: MonitoringRules, store_uri: str, now: datetime | None = None
) -> dict[str, Any]:
    """Live quality and bias of every version with predictions in the window, the alerts, and a PNG.

    ``checked`` names the alert kinds that were judged for at least one version (``quality_decay``,
    ``bias``): an alert of a kind that was not checked has not resolved. ``note`` says why, when no
    version was judged.
    """
    from mlops_supervisor.tools.monitoring._plots import quality_plot

    model_dir = Path(workspace) / "serving" / model
    if not (model_dir / "predictions").is_dir():
        raise InvalidInputError(
            "no_predictions",
            f"{model} has no prediction log in this workspace (serving/{model}/predictions); deploy it and send "
            "traffic first",
        )
    at = now or datetime.now(UTC)
    since = at.timestamp() - rules.quality_window_hours * 3600
    predictions = read_predictions(model_dir, since)
    logged = sorted(int(v) for v in pd.unique(predictions["version"]))
    tags = _version_tags(store_uri, model, logged)
    classes = {v: c for v, t in tags.items() if t and (c := version_classes(t)) is not None}
    frame = join_feedback(predictions, read_feedback(model_dir), model_dir, classes)
    contract = _contract(model_dir) or {}
    features = list(contract.get("sensitive_features") or []) or sorted(
        c.removeprefix(_ATTR) for c in frame.columns if c.startswith(_ATTR)
    )
    versions: dict[str, dict[str, Any]] = {}
    alerts: list[dict[str, Any]] = []
    groups = {int(v): rows for v, rows in frame.groupby("version", sort=True)} if len(frame) else {}
    for version in logged:
        rows = groups.get(version, frame.iloc[0:0])
        version_tags = tags[version]
        if version_tags is None:
            versions[str(version)] = {
                "labelled": len(rows),
                "judged": False,
                "reason": f"version {version} is not in the registry",
            }
            continue
        if version not in classes and version_tags.get("mlops.task") != "regression":
            versions[str(version)] = {
                "labelled": 0,
                "judged": False,
                "reason": f"version {version} records no classes (mlops.target.classes): its labels cannot be read",
            }
            continue
        result = assess_version(
            model,
            version,
            rows,
            classes=classes.get(version),
            evaluation=_evaluation_metrics(version_tags),
            features=features,
            rules=rules,
        )
        alerts += result.pop("alerts")
        versions[str(version)] = result
    judged = [r for r in versions.values() if r["judged"]]
    checked = (["bias"] if any(f["judged"] for r in judged for f in r["fairness"].values()) else []) + (
        ["quality_decay"] if judged else []
    )
    plot = quality_plot(Path(workspace) / "reports" / model, model, versions)
    note = (
        None
        if judged
        else f"no version has {rules.min_labelled} labelled predictions in the last {rules.quality_window_hours:g} h"
        + (" (" + ", ".join(f"version {v}: {r['labelled']}" for v, r in versions.items()) + ")" if versions else "")
    )
    return {
        "model": model,
        "window_hours": rules.quality_window_hours,
        "since": datetime.fromtimestamp(since, UTC).isoformat(),
        "min_labelled": rules.min_labelled,
        "max_metric_decay": rules.max_metric_decay,
        "fairness_limits": dict(rules.fairness),
        "sensitive_features": features,
        "versions": versions,
        "alerts": alerts,
        "checked": checked,
        "plot": str(plot) if plot else None,
        **({"note": note} if note else {}),
    }


def headline_windows(
    model_dir: Path, versions: Sequence[int], *, since: float, classes: Mapping[int, Sequence[str]] | None
) -> dict[int, tuple[int, float | None]]:
    """For canary analysis: each version's labelled count since ``since`` and its headline metric.

    The headline metric is accuracy for a classifier (``classes`` names each version's classes) and
    rmse for a regressor (``classes`` None); its value is None without labelled rows.
    """
    frame = labelled_predictions(model_dir, since=since, classes=classes)
    classification = classes is not None
    metric = "accuracy" if classification else "rmse"
    out: dict[int, tuple[int, float | None]] = {}
    for version in versions:
        rows = frame[frame["version"] == version]
        n_classes = len((classes or {}).get(version, ())) or None
        value = live_metrics(rows, classification=classification, n_classes=n_classes)[metric] if len(rows) else None
        out[version] = (len(rows), value)
    return out
