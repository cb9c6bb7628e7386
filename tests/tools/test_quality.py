"""Live quality and bias: the join of predictions and late labels, the metrics, fairness, alerts, plot and canary check.

The prediction log and the feedback store are written here exactly in the issue's formats
(``serving/<model>/predictions/*.jsonl``, ``serving/<model>/feedback/*.parquet``); the metrics are
checked against scikit-learn and fairlearn-free arithmetic computed independently on the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as m

from mlops_supervisor.policies import AuditLog, PatternRedactor, load_policy
from mlops_supervisor.policies.canary import LabelledWindow, analyze_canary_quality
from mlops_supervisor.policies.policy import MonitoringRules
from mlops_supervisor.tools import build_tool_registry
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.evaluation import assess_fairness
from mlops_supervisor.tools.evaluation._scoring import score_model
from mlops_supervisor.tools.monitoring._plots import quality_plot
from mlops_supervisor.tools.monitoring._quality import (
    assess_version,
    group_fairness,
    labelled_predictions,
    live_metrics,
    metric_decay,
)
from mlops_supervisor.tools.serving._advance import advance
from mlops_supervisor.tools.serving._canary import CanaryRecord, judge_labels, write_canary
from tests.test_pipeline import _adult_slice, small_spec
from tests.tools.test_serving_units import _Endpoint, _exposition

MODEL = "small-model"
CLASSES = ["<=50K", ">50K"]
NOW = datetime(2030, 1, 8, tzinfo=UTC)
RULES = MonitoringRules()


# -- writing the formats ------------------------------------------------------------------


def write_predictions(model_dir: Path, frame: pd.DataFrame, segment: str = "20300101T000000-1") -> None:
    """``frame`` (request_id, row, ts, version, prediction, optional proba lists) as one prediction-log segment."""
    folder = model_dir / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for rec in frame.to_dict("records"):
        item: dict[str, Any] = {
            "id": rec["request_id"],
            "row": int(rec["row"]),
            "ts": float(rec["ts"]),
            "version": int(rec["version"]),
            "prediction": rec["prediction"],
        }
        if isinstance(rec.get("proba"), list):
            item["proba"] = rec["proba"]
        lines.append(json.dumps(item) + "\n")
    path = folder / f"{segment}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, "".join(lines).encode())
    finally:
        os.close(fd)
    last = float(frame["ts"].max())
    os.utime(path, (last, last))  # as if written when its last prediction was: readers skip older segments


def write_feedback(model_dir: Path, frame: pd.DataFrame, batch: str = "b1") -> None:
    """``frame`` (request_id, row, label and ``attr.*`` columns) as one feedback batch, in the store's schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric = pd.api.types.is_float_dtype(frame["label"])
    columns: dict[str, pa.Array] = {
        "request_id": pa.array(frame["request_id"].astype(str).tolist(), pa.string()),
        "row": pa.array(frame["row"].astype("int64"), pa.int64()),
        "label": pa.array(frame["label"].tolist(), pa.float64() if numeric else pa.string()),
        "received_at": pa.array(np.full(len(frame), NOW.timestamp()), pa.float64()),
    }
    for column in (c for c in frame.columns if c.startswith("attr.")):
        columns[column] = pa.array(frame[column].astype(str).tolist(), pa.string())
    folder = model_dir / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"{batch}.parquet")


def _ids(rng: np.random.Generator, n: int) -> list[str]:
    return [rng.bytes(16).hex() for _ in range(n)]


def binary_traffic(n: int, *, seed: int = 0, version: int = 1, ts: float | None = None) -> pd.DataFrame:
    """``n`` one-record predictions with probabilities, their true labels (names) and each one's sex."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p1 = np.clip(0.3 * y + 0.6 * rng.random(n) + 0.05, 0.01, 0.99)  # overlapping: accuracy near 0.8
    return pd.DataFrame(
        {
            "request_id": _ids(rng, n),
            "row": 0,
            "ts": (ts or NOW.timestamp() - 3600) + np.arange(n) * 0.01,
            "version": version,
            "prediction": (p1 >= 0.5).astype(int),
            "proba": [[1 - p, p] for p in p1],
            "label": [CLASSES[i] for i in y],
            "attr.sex": rng.choice(["Female", "Male"], n),
        }
    )


def _flip(frame: pd.DataFrame, sex: str) -> pd.DataFrame:
    """``frame`` with the labels of one group's rows turned to the other class."""
    out = frame.copy()
    rows = out["attr.sex"] == sex
    out.loc[rows, "label"] = out.loc[rows, "label"].map({CLASSES[0]: CLASSES[1], CLASSES[1]: CLASSES[0]})
    return out


def _serve(model_dir: Path, traffic: pd.DataFrame, labelled: pd.DataFrame | None = None) -> None:
    """A fresh prediction log of ``traffic`` and one feedback batch of ``labelled`` (default: all of it)."""
    shutil.rmtree(model_dir, ignore_errors=True)
    write_predictions(model_dir, traffic)
    feedback = traffic if labelled is None else labelled
    write_feedback(model_dir, feedback[["request_id", "row", "label", *[c for c in feedback if c.startswith("attr.")]]])


def _ece(y: np.ndarray, p: np.ndarray) -> float:
    """Expected calibration error over ten equal-width bins, written out again for the test."""
    bins = np.minimum((p * 10).astype(int), 9)
    return float(sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins)))


# -- the join -------------------------------------------------------------------------------------


def test_the_join_matches_request_and_row_and_leaves_out_predictions_before_the_window(tmp_path: Path) -> None:
    """Labels join on (request_id, row); a row not labelled, an unknown id and a prediction before ``since`` drop out."""
    traffic = binary_traffic(300)
    old = binary_traffic(40, seed=1, ts=NOW.timestamp() - 200 * 3600)
    two_rows = traffic.head(1).assign(row=1, label=CLASSES[1], prediction=1)  # the same request's second record
    stranger = binary_traffic(1, seed=2)
    model_dir = tmp_path / "m"
    write_predictions(model_dir, pd.concat([traffic, old, two_rows]))
    write_feedback(model_dir, pd.concat([traffic.iloc[50:], old, two_rows, stranger]).drop(columns=["proba"]))
    since = NOW.timestamp() - RULES.quality_window_hours * 3600
    joined = labelled_predictions(model_dir, since=since, classes={1: CLASSES})
    expected = {(r, 0) for r in traffic["request_id"].iloc[50:]} | {(two_rows["request_id"].iloc[0], 1)}
    assert set(zip(joined["request_id"], joined["row"], strict=True)) == expected
    assert len(joined) == len(expected)
    assert (joined["label_index"] == joined["label"].map(CLASSES.index)).all()
    assert joined[["proba_0", "proba_1"]].sum(axis=1).round(9).eq(1).all()
    everything = labelled_predictions(model_dir, since=None, classes={1: CLASSES})
    assert len(everything) == len(expected) + len(old)


# -- the metrics ----------------------------------------------------------------------------------


def test_binary_metrics_equal_sklearns_on_the_same_joined_rows(tmp_path: Path) -> None:
    """accuracy, f1, ROC AUC, Brier score and ECE equal scikit-learn's (and the ECE written out) on the joined rows."""
    traffic = binary_traffic(500, seed=3)
    _serve(tmp_path / "m", traffic, traffic.sample(400, random_state=0))
    joined = labelled_predictions(tmp_path / "m", since=None, classes={1: CLASSES})
    y, pred, p = joined["label_index"].to_numpy(), joined["prediction"].to_numpy(), joined["proba_1"].to_numpy()
    live = live_metrics(joined, classification=True, n_classes=2)
    assert len(joined) == 400
    assert live["accuracy"] == pytest.approx(m.accuracy_score(y, pred), abs=1e-6)
    assert live["f1"] == pytest.approx(m.f1_score(y, pred), abs=1e-6)
    assert live["roc_auc"] == pytest.approx(m.roc_auc_score(y, p), abs=1e-6)
    assert live["brier_score"] == pytest.approx(m.brier_score_loss(y, p), abs=1e-6)
    assert live["expected_calibration_error"] == pytest.approx(_ece(y, p), abs=1e-6)
    assert live["accuracy"] != live["f1"]  # distinct numbers: a mix-up of keys would show


def test_multiclass_metrics_are_macro_f1_and_one_vs_rest_auc_and_none_without_probabilities(tmp_path: Path) -> None:
    """Three classes: macro F1 and one-vs-rest AUC as scikit-learn computes them; no probabilities: AUC is None."""
    rng = np.random.default_rng(4)
    n, classes = 600, ["a", "b", "c"]
    y = rng.integers(0, 3, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), y] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    traffic = pd.DataFrame(
        {
            "request_id": _ids(rng, n),
            "row": 0,
            "ts": NOW.timestamp(),
            "version": 1,
            "prediction": proba.argmax(axis=1),
            "proba": proba.tolist(),
            "label": [classes[i] for i in y],
        }
    )
    _serve(tmp_path / "m", traffic)
    joined = labelled_predictions(tmp_path / "m", since=None, classes={1: classes})
    live = live_metrics(joined, classification=True, n_classes=3)
    pred = proba.argmax(axis=1)
    assert live["f1"] == pytest.approx(m.f1_score(y, pred, average="macro"), abs=1e-6)
    assert live["roc_auc"] == pytest.approx(m.roc_auc_score(y, proba, multi_class="ovr"), abs=1e-6)
    assert live["brier_score"] is None  # calibration is for two classes, as at evaluation
    no_proba = live_metrics(joined.drop(columns=["proba_0", "proba_1", "proba_2"]), classification=True, n_classes=3)
    assert no_proba["roc_auc"] is None and no_proba["accuracy"] == live["accuracy"]


def test_regression_gives_rmse_and_mae_and_their_decay_is_relative(tmp_path: Path) -> None:
    """A regressor's float labels: rmse and mae equal scikit-learn's; a 20 % rise of rmse is over a 5 % tolerance."""
    rng = np.random.default_rng(5)
    n = 300
    truth = rng.normal(50, 10, n)
    traffic = pd.DataFrame(
        {
            "request_id": _ids(rng, n),
            "row": 0,
            "ts": NOW.timestamp(),
            "version": 1,
            "prediction": truth + rng.normal(0, 3, n),
            "label": truth,
        }
    )
    _serve(tmp_path / "m", traffic)
    joined = labelled_predictions(tmp_path / "m", since=None)
    assert joined["label"].dtype == "float64" and len(joined) == n
    live = live_metrics(joined, classification=False)
    rmse = float(np.sqrt(m.mean_squared_error(joined["label"], joined["prediction"])))
    assert live["rmse"] == pytest.approx(rmse, abs=1e-6)
    assert live["mae"] == pytest.approx(m.mean_absolute_error(joined["label"], joined["prediction"]), abs=1e-6)
    evaluation = {"rmse": rmse / 1.2, "mae": float(live["mae"] or 0) / 1.03}
    decay = metric_decay(live, evaluation, 0.05)
    assert decay["rmse"]["decay"] == pytest.approx(0.2, abs=1e-5) and decay["rmse"]["over"]
    assert decay["mae"]["decay"] == pytest.approx(0.03, abs=1e-5) and not decay["mae"]["over"]
    judged = assess_version(MODEL, 1, joined, classes=None, evaluation=evaluation, features=["sex"], rules=RULES)
    assert [(a["kind"], a["metric"]) for a in judged["alerts"]] == [("quality_decay", "rmse")]
    assert judged["fairness"] == {}


def test_a_score_dropping_and_a_loss_rising_both_count_as_decay() -> None:
    """accuracy 0.80 -> 0.72 and brier 0.10 -> 0.17 are both 'worse'; a better live value is a negative decay."""
    decay = metric_decay(
        {"accuracy": 0.72, "brier_score": 0.17, "f1": 0.9, "roc_auc": None},
        {"accuracy": 0.8, "brier_score": 0.1, "f1": 0.7},
        0.05,
    )
    assert (decay["accuracy"]["decay"], decay["accuracy"]["over"]) == (pytest.approx(0.08), True)
    assert (decay["brier_score"]["decay"], decay["brier_score"]["over"]) == (pytest.approx(0.07), True)
    assert (decay["f1"]["decay"], decay["f1"]["over"]) == (pytest.approx(-0.2), False)
    assert decay["roc_auc"] == {"live": None, "evaluation": None, "decay": None, "relative": False, "over": False}


def test_fairness_over_weighted_cells_equals_fairlearn_over_the_rows() -> None:
    """Checks and per-group metrics equal the evaluation's ``assess_fairness`` (fairlearn on every row), 4 groups."""
    rng = np.random.default_rng(8)
    n = 3000
    groups = pd.Series(rng.choice(["a", "b", "c", "d"], n, p=[0.5, 0.3, 0.15, 0.05]), name="race")
    y = (rng.random(n) < np.where(groups == "a", 0.4, 0.2)).astype(int)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    limits = {"demographic_parity_difference": 0.1, "equalized_odds_difference": 0.5}
    ours = group_fairness(y, pred, groups, limits, binary=True)
    theirs = assess_fairness(y, pred, groups.to_frame(), ["race"], limits)["race"].as_report()
    assert ours["checks"] == theirs["checks"]
    assert [c["passed"] for c in ours["checks"].values()] == [False, True]  # one each way: the limits are read
    assert len(ours["by_group"]) == len(theirs["by_group"]) == 4
    for mine, fairlearns in zip(ours["by_group"], theirs["by_group"], strict=True):
        assert mine.keys() == fairlearns.keys()
        assert mine == pytest.approx(fairlearns, abs=1e-12)


# -- judging a version ----------------------------------------------------------------------------


def _joined(tmp_path: Path, traffic: pd.DataFrame) -> pd.DataFrame:
    _serve(tmp_path / "m", traffic)
    return labelled_predictions(tmp_path / "m", since=None, classes={1: CLASSES})


def test_a_version_below_the_labelled_minimum_is_not_judged_and_says_how_many(tmp_path: Path) -> None:
    """150 labelled predictions under a minimum of 200: not judged, no metrics, no alerts, the count in the reason."""
    joined = _joined(tmp_path, _flip(binary_traffic(150), "Female"))
    result = assess_version(
        MODEL, 1, joined, classes=CLASSES, evaluation={"accuracy": 0.99}, features=["sex"], rules=RULES
    )
    assert result == {
        "labelled": 150,
        "judged": False,
        "reason": "150 labelled predictions in the window; at least 200 needed",
        "alerts": [],
    }


def test_one_groups_shifted_outcomes_raise_a_bias_and_a_quality_decay_alert(tmp_path: Path) -> None:
    """Women's labels flipped: equalized odds over 0.25 by sex and accuracy decayed; the same traffic unshifted: none."""
    traffic = binary_traffic(2000, seed=6)
    calm = _joined(tmp_path, traffic)
    evaluation = {k: v for k, v in live_metrics(calm, classification=True).items() if v is not None}
    quiet = assess_version(MODEL, 1, calm, classes=CLASSES, evaluation=evaluation, features=["sex"], rules=RULES)
    assert quiet["judged"] and quiet["alerts"] == []
    assert quiet["fairness"]["sex"]["judged"] and quiet["fairness"]["sex"]["labelled"] == 2000

    shifted = _joined(tmp_path, _flip(traffic, "Female"))
    result = assess_version(MODEL, 1, shifted, classes=CLASSES, evaluation=evaluation, features=["sex"], rules=RULES)
    y, pred, sex = shifted["label_index"], shifted["prediction"], shifted["attr.sex"]
    rates = {g: (pred[(sex == g) & (y == 1)].mean(), pred[(sex == g) & (y == 0)].mean()) for g in ("Female", "Male")}
    odds = max(abs(rates["Female"][0] - rates["Male"][0]), abs(rates["Female"][1] - rates["Male"][1]))
    bias = [a for a in result["alerts"] if a["kind"] == "bias"]
    assert [(a["feature"], a["metric"]) for a in bias] == [("sex", "equalized_odds_difference")]
    assert bias[0]["value"] == pytest.approx(odds, abs=1e-6) and bias[0]["limit"] == 0.25
    assert f"{odds:.4f}" in bias[0]["message"] and "equalized_odds_difference by sex" in bias[0]["message"]
    assert "limit 0.25" in bias[0]["message"] and bias[0]["runbook"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
    live_accuracy = m.accuracy_score(y, pred)
    decayed = {a["metric"]: a for a in result["alerts"] if a["kind"] == "quality_decay"}
    assert "accuracy" in decayed and decayed["accuracy"]["value"] == pytest.approx(live_accuracy, abs=1e-6)
    message = decayed["accuracy"]["message"]
    assert f"live accuracy {live_accuracy:.4f}" in message and f"{evaluation['accuracy']:.4f} at evaluation" in message
    assert "tolerance 0.05" in message
    groups = {row["group"]: row for row in result["fairness"]["sex"]["by_group"]}
    assert groups["Female"]["count"] == (sex == "Female").sum()
    assert groups["Male"]["selection_rate"] == pytest.approx(pred[sex == "Male"].mean())

    plot = quality_plot(tmp_path / "reports", MODEL, {"1": result})
    assert plot is not None and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert quality_plot(tmp_path / "reports", MODEL, {"1": {"labelled": 3, "judged": False}}) is None


def test_a_three_class_model_with_two_classes_labelled_is_judged_as_three_classes(tmp_path: Path) -> None:
    """Labels only of classes a and c in the window: fairness is the multiclass kind (no equalized odds), no crash."""
    rng = np.random.default_rng(12)
    n, classes = 400, ["a", "b", "c"]
    y = rng.choice([0, 2], n)
    sex = rng.choice(["Female", "Male"], n)
    pred = np.where(rng.random(n) < np.where(sex == "Female", 0.5, 0.1), 1, y)  # women predicted "b" more often
    traffic = pd.DataFrame(
        {
            "request_id": _ids(rng, n),
            "row": 0,
            "ts": NOW.timestamp(),
            "version": 1,
            "prediction": pred,
            "label": [classes[i] for i in y],
            "attr.sex": sex,
        }
    )
    _serve(tmp_path / "m", traffic)
    joined = labelled_predictions(tmp_path / "m", since=None, classes={1: classes})
    result = assess_version(MODEL, 1, joined, classes=classes, evaluation={}, features=["sex"], rules=RULES)
    fairness = result["fairness"]["sex"]
    assert fairness["judged"] and list(fairness["checks"]) == ["demographic_parity_difference"]
    rates = {g: float((pred[sex == g] == 1).mean()) for g in ("Female", "Male")}
    difference = abs(rates["Female"] - rates["Male"])
    assert fairness["checks"]["demographic_parity_difference"]["value"] == pytest.approx(difference, abs=1e-6)
    assert difference > 0.25 and [(a["kind"], a["feature"]) for a in result["alerts"] if a["kind"] == "bias"] == [
        ("bias", "sex")
    ]
    assert result["metrics"]["f1"]["live"] == pytest.approx(m.f1_score(y, pred, average="macro"), abs=1e-6)


def test_a_group_with_too_few_labels_is_left_out_of_fairness_and_named(tmp_path: Path) -> None:
    """One labelled row of a made-up group beside 399 others decides nothing: it is named, not judged, no alert."""
    traffic = binary_traffic(400, seed=13).assign(**{"attr.sex": "Male"})
    traffic.loc[0, ["attr.sex", "prediction"]] = ["Zz", 1]
    joined = _joined(tmp_path, traffic)
    result = assess_version(MODEL, 1, joined, classes=CLASSES, evaluation={}, features=["sex"], rules=RULES)
    assert result["fairness"]["sex"] == {
        "labelled": 400,
        "judged": False,
        "reason": "fewer than two groups of 'sex' have 30 labelled predictions",
        "not_judged": ["group 'Zz' has 1 labelled, fewer than 30"],
    }
    assert [a for a in result["alerts"] if a["kind"] == "bias"] == []
    # counted, the one row is a group whose every prediction is positive: the bias alert it would have caused
    counted = assess_version(
        MODEL,
        1,
        joined,
        classes=CLASSES,
        evaluation={},
        features=["sex"],
        rules=RULES.model_copy(update={"min_group_labelled": 1}),
    )
    assert counted["fairness"]["sex"]["checks"]["demographic_parity_difference"]["value"] > 0.25
    assert ("bias", "demographic_parity_difference") in {(a["kind"], a["metric"]) for a in counted["alerts"]}


def test_the_differences_are_those_of_the_groups_with_enough_labels(tmp_path: Path) -> None:
    """Women and men (about 200 each) judged; five rows of a third group are named and left out of the numbers."""
    traffic = binary_traffic(410, seed=14)
    traffic.loc[:4, ["attr.sex", "prediction"]] = ["Other", 1]
    joined = _joined(tmp_path, traffic)
    sex = joined["attr.sex"]
    result = assess_version(MODEL, 1, joined, classes=CLASSES, evaluation={}, features=["sex"], rules=RULES)
    fairness = result["fairness"]["sex"]
    assert fairness["judged"] and fairness["labelled"] == 410
    assert fairness["not_judged"] == ["group 'Other' has 5 labelled, fewer than 30"]
    assert [g["group"] for g in fairness["by_group"]] == ["Female", "Male"]
    two = sex != "Other"
    alone = group_fairness(
        joined["label_index"][two].to_numpy(),
        joined["prediction"][two].to_numpy(),
        sex[two],
        RULES.fairness,
        binary=True,
    )
    assert fairness["checks"] == alone["checks"]
    five = RULES.model_copy(update={"min_group_labelled": 5})
    every = assess_version(MODEL, 1, joined, classes=CLASSES, evaluation={}, features=["sex"], rules=five)
    assert [g["group"] for g in every["fairness"]["sex"]["by_group"]] == ["Female", "Male", "Other"]
    assert "not_judged" not in every["fairness"]["sex"]


def test_a_version_keeps_its_probabilities_beside_a_version_with_more_classes(tmp_path: Path) -> None:
    """Two-class version 1 and three-class version 2 in one window: version 1's ROC AUC and calibration still count."""
    one = binary_traffic(300, seed=15)
    rng = np.random.default_rng(15)
    proba = rng.dirichlet([1, 1, 1], 50)
    two = pd.DataFrame(
        {
            "request_id": _ids(rng, 50),
            "row": 0,
            "ts": NOW.timestamp() - 60,
            "version": 2,
            "prediction": proba.argmax(axis=1),
            "proba": proba.tolist(),
            "label": "b",
            "attr.sex": "Male",
        }
    )
    _serve(tmp_path / "m", pd.concat([one, two], ignore_index=True))
    joined = labelled_predictions(tmp_path / "m", since=None, classes={1: CLASSES, 2: ["a", "b", "c"]})
    assert "proba_2" in joined.columns  # version 1's rows have no third probability
    rows = joined[joined["version"] == 1]
    live = live_metrics(rows, classification=True, n_classes=2)
    y, p = rows["label_index"].to_numpy(), rows["proba_1"].to_numpy()
    assert live["roc_auc"] == pytest.approx(m.roc_auc_score(y, p), abs=1e-6)
    assert live["brier_score"] == pytest.approx(m.brier_score_loss(y, p), abs=1e-6)


# -- canary analysis with labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("canary", "stable", "verdict", "said"),
    [
        (LabelledWindow(labelled=250, metric="accuracy", value=0.80), 0.84, "pass", "within the allowed decay 0.05"),
        (LabelledWindow(labelled=250, metric="accuracy", value=0.78), 0.84, "fail", "worse by 0.0600 (allowed 0.05)"),
        (LabelledWindow(labelled=120, metric="accuracy", value=0.10), 0.84, "not_judged", "120 labelled canary"),
        (LabelledWindow(labelled=250, metric="rmse", value=10.4), 10.0, "pass", "allowed decay 5% of stable's"),
        (LabelledWindow(labelled=250, metric="rmse", value=10.6), 10.0, "fail", "worse by 0.0600 (allowed 5%"),
    ],
)
def test_canary_quality_is_judged_only_with_enough_labels_on_both_sides(
    canary: LabelledWindow, stable: float, verdict: str, said: str
) -> None:
    """Accuracy may drop 0.05, rmse rise 5 %; fewer than 200 labels on a side is not judged, whatever the numbers."""
    baseline = LabelledWindow(labelled=900, metric=canary.metric, value=stable)
    result = analyze_canary_quality(canary, baseline, min_labelled=200, max_decay=0.05)
    assert result.verdict == verdict and said in result.reason
    alone = analyze_canary_quality(canary, None, min_labelled=200, max_decay=0.05)
    assert alone.verdict == "not_judged"


# -- through the tools, on a real store -----------------------------------------------------------


def _context(ws: Path, clock: datetime = NOW) -> ToolContext:
    return ToolContext(
        workspace=ws,
        audit=AuditLog(ws / "audit.jsonl"),
        policy=load_policy(None),
        redactor=PatternRedactor(),
        pii_detector=lambda rules: PatternRedactor(),
        clock=lambda: clock,
    )


def _call(ws: Path, tool: str, **args: object) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(build_tool_registry(_context(ws), actor="alice").get(tool).tool.invoke(args))
    return answer


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Version 1 of ``MODEL`` trained on a slice of Adult and evaluated, version 2 registered from the same run,
    and the model's answers on the test split the evaluation scored."""
    root = tmp_path_factory.mktemp("quality")
    spec = str(small_spec(root, _adult_slice(), data__sensitive_features=["sex"]))
    ws = root / "ws"
    ws.mkdir()
    for stage in ("version_dataset", "split_dataset"):
        _call(ws, stage, spec=spec)
    run_id = _call(ws, "train_model", spec=spec)["best"]["run_id"]
    for expected in (1, 2):
        assert _call(ws, "register_model", model=MODEL, run_id=run_id)["version"] == expected
    evaluation = _call(ws, "evaluate_model", model=MODEL, version=1)
    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet")))
    uri = _context(ws).store_uri
    with using_store(uri) as client:
        source = client.get_model_version(MODEL, "1").source
        scored = score_model(source, test, "class", CLASSES)
    assert scored.proba is not None
    rng = np.random.default_rng(7)
    traffic = pd.DataFrame(
        {
            "request_id": _ids(rng, len(test)),
            "row": 0,
            "ts": NOW.timestamp() - 3600 + np.arange(len(test)) * 0.01,
            "version": 1,
            "prediction": scored.pred.astype(int),
            "proba": scored.proba.tolist(),
            "label": test["class"].astype(str).to_numpy(),
            "attr.sex": test["sex"].astype(str).to_numpy(),
        }
    )
    return {"ws": ws, "uri": uri, "traffic": traffic, "evaluation": evaluation}


def test_the_tool_scores_the_evaluations_own_rows_as_the_evaluation_did(evaluated: dict[str, Any]) -> None:
    """The test split served and labelled: live metrics equal the recorded evaluation's; older rows are not counted."""
    ws, traffic = evaluated["ws"], evaluated["traffic"]
    stale = traffic.head(300).assign(request_id=lambda d: d["request_id"].str[::-1], ts=NOW.timestamp() - 169 * 3600)
    model_dir = ws / "serving" / MODEL
    _serve(model_dir, pd.concat([traffic, stale]))
    report = _call(ws, "quality_report", model=MODEL)
    version = report["versions"]["1"]
    assert version["judged"] and version["labelled"] == len(traffic)
    with using_store(evaluated["uri"]) as client:
        tags = client.get_model_version(MODEL, "1").tags
    for name in ("accuracy", "f1", "roc_auc", "brier_score", "expected_calibration_error"):
        row = version["metrics"][name]
        assert row["evaluation"] == float(tags[f"mlops.eval.metric.{name}"])
        assert row["live"] == pytest.approx(row["evaluation"], abs=1e-6) and not row["over"], name
    assert report["alerts"] == [] and report["checked"] == ["bias", "quality_decay"]
    assert report["versions"]["1"]["fairness"]["sex"]["labelled"] == len(traffic)
    assert Path(report["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert Path(report["plot"]).parent == ws / "reports" / MODEL


def test_the_tool_alerts_on_one_groups_shifted_outcomes(evaluated: dict[str, Any]) -> None:
    """Women's outcomes flipped in the feedback: a bias alert by sex and quality-decay alerts, each with a runbook."""
    ws, traffic = evaluated["ws"], evaluated["traffic"]
    _serve(ws / "serving" / MODEL, traffic, _flip(traffic, "Female"))
    report = _call(ws, "quality_report", model=MODEL)
    kinds = {(a["kind"], a.get("feature"), a["metric"]) for a in report["alerts"]}
    assert ("bias", "sex", "equalized_odds_difference") in kinds
    assert ("quality_decay", None, "accuracy") in kinds
    assert all(a["version"] == 1 and a["runbook"]["verify"] for a in report["alerts"])


def test_a_model_that_never_served_is_refused_by_name(evaluated: dict[str, Any]) -> None:
    """quality_report on a model without a prediction log names the model and what to do."""
    with pytest.raises(Exception, match="nobody-model has no prediction log"):
        _call(evaluated["ws"], "quality_report", model="nobody-model")


def _canary_record(started: datetime) -> CanaryRecord:
    return CanaryRecord(
        version=2,
        stable=1,
        steps=[10, 50],
        step=0,
        analysis={
            "window_seconds": 30,
            "min_requests": 100,
            "max_error_rate_increase": 0.01,
            "max_p95_latency_ratio": 1.5,
        },
        snapshot={},
        started_at=started.isoformat(),
        step_started_at=started.isoformat(),
        state="running",
        history=[],
    )


def _canary_traffic(evaluated: dict[str, Any], canary_rows: int, flip_canary: bool) -> None:
    """Stable (version 1) and canary (version 2) predictions after the step started, all labelled."""
    traffic = evaluated["traffic"]
    stable = traffic.iloc[canary_rows:].assign(version=1)
    canary = traffic.iloc[:canary_rows].assign(version=2)
    labels = _flip(canary, "Female") if flip_canary else canary
    model_dir = evaluated["ws"] / "serving" / MODEL
    shutil.rmtree(model_dir, ignore_errors=True)
    write_predictions(model_dir, pd.concat([stable, canary]))
    write_feedback(model_dir, pd.concat([stable, labels])[["request_id", "row", "label", "attr.sex"]])


@pytest.mark.parametrize(
    ("canary_rows", "flip", "verdict", "said"),
    [
        (120, False, "not_judged", "120 labelled canary and"),
        (250, False, "pass", "within the allowed decay 0.05"),
        (250, True, "fail", "allowed 0.05"),
    ],
)
def test_the_canary_label_check_reads_both_versions_since_the_step_started(
    evaluated: dict[str, Any], canary_rows: int, flip: bool, verdict: str, said: str
) -> None:
    """Too few canary labels: not judged; the same labels as stable's: pass; one group flipped: fail."""
    _canary_traffic(evaluated, canary_rows, flip)
    started = NOW - timedelta(hours=2)
    record = _canary_record(started)
    result = judge_labels(evaluated["ws"], evaluated["uri"], MODEL, record, RULES)
    assert result.verdict == verdict and said in result.reason
    later = judge_labels(evaluated["ws"], evaluated["uri"], MODEL, _canary_record(NOW), RULES)
    assert later.verdict == "not_judged" and "0 labelled canary and 0 labelled stable" in later.reason


def _advance_once(evaluated: dict[str, Any], router: ThreadingHTTPServer, flip: bool) -> tuple[dict[str, Any], Any]:
    _canary_traffic(evaluated, 250, flip)
    ws = evaluated["ws"]
    started = NOW - timedelta(hours=2)
    write_canary(ws, MODEL, _canary_record(started))
    router.text = _exposition({"2": (200, 0), "1": (1800, 0)})  # type: ignore[attr-defined]
    backend = _Endpoint(
        f"http://127.0.0.1:{router.server_address[1]}",
        {1: {"alive": True, "weight": 90}, 2: {"alive": True, "weight": 10}},
    )
    ctx = dataclasses.replace(_context(ws), clock=lambda: started + timedelta(seconds=31))
    return advance(ctx, backend, MODEL), backend


def test_a_canary_step_with_worse_labelled_quality_fails_and_rolls_back(
    evaluated: dict[str, Any], router: ThreadingHTTPServer
) -> None:
    """Healthy traffic and a baked window, but the canary's labelled accuracy is worse: fail, back to version 1."""
    outcome, backend = _advance_once(evaluated, router, flip=True)
    assert outcome["verdict"] == "fail" and outcome["quality"]["verdict"] == "fail"
    assert outcome["reasons"][0].startswith("live accuracy") and backend.rolled_back_to == [1]


def test_a_canary_step_with_equal_labelled_quality_steps_up(
    evaluated: dict[str, Any], router: ThreadingHTTPServer
) -> None:
    """The same traffic with the canary's labels as good as stable's: the step passes and takes 50 %."""
    outcome, backend = _advance_once(evaluated, router, flip=False)
    assert (outcome["verdict"], outcome["quality"]["verdict"]) == ("pass", "pass")
    assert backend.weights == [{2: 50, 1: 50}]


def test_quality_model_is_the_observability_agents_quality_report() -> None:
    """The offline planner sends `quality MODEL` to the observability agent, whose allow-list has quality_report."""
    from mlops_supervisor._planner import parse_request
    from mlops_supervisor.agents.observability import SPEC

    (command,) = parse_request("quality small-model")
    assert (command.agent, command.tool, command.args) == ("observability", "quality_report", {"model": "small-model"})
    assert "quality_report" in SPEC.allow_list
