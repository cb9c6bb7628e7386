"""Live quality and fairness: ours against the same computation written directly with pandas and fairlearn.

1,000,000 predictions of a binary classifier are written in the router's prediction-log format
(``serving/<model>/predictions/*.jsonl``, segments rolled at 64 MiB, each line ``{"id", "row", "ts",
"version", "prediction", "proba"}``) and 1,000,000 labels for them in the feedback store's format
(``serving/<model>/feedback/*.parquet``, ten batches of 100,000 rows: ``request_id``, ``row``, ``label``
(the class name), ``received_at``, ``attr.sex``, ``attr.race``; sex and race drawn with Adult's
shares). Both sides read the same files, each in a fresh process, with their libraries imported
before the clock starts, and time everything from the files to the numbers:

- ours: ``labelled_predictions`` (pyarrow's JSON and Parquet readers, the join, label indexes) and
  ``assess_version`` (accuracy, F1, ROC AUC, Brier score and ECE beside the evaluation's values, and
  fairlearn's per-group metrics and differences for both features, the alerts) from
  ``tools/monitoring/_quality.py``;
- direct: ``pd.read_json(lines=True, engine="pyarrow")``, ``pd.read_parquet``, ``merge``, the same
  scikit-learn metrics and ECE, and the same fairlearn ``MetricFrame`` and differences, written out.

Rounds are interleaved and the median of each side is reported; the two sides' numbers must agree.
Prints a Markdown row and, with --write, updates the row and the "Live quality and fairness" section
of BENCHMARKS.md:

    .venv/bin/python benchmarks/bench_feedback_quality.py --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _measure import rss_mib  # noqa: E402
from _rows import write_rows, write_section  # noqa: E402

ROWS, BATCHES, SEGMENT_BYTES = 1_000_000, 10, 64 * 1024 * 1024
CLASSES = ["<=50K", ">50K"]
FEATURES = ["sex", "race"]
LIMITS = {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.25}
EVALUATION = {"accuracy": 0.85, "f1": 0.65, "roc_auc": 0.9, "brier_score": 0.1, "expected_calibration_error": 0.03}
NOW = 1_900_000_000.0
WINDOW_HOURS = 168
SEED = 0
ROW = "| live quality and fairness"
SECTION = "## Live quality and fairness against pandas and fairlearn"


def make_data(model_dir: Path) -> dict[str, Any]:
    """Write the prediction log and the feedback batches under ``model_dir``; return what was written."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(SEED)
    adult = pd.read_parquet(ROOT / "examples" / "data" / "adult.parquet", columns=FEATURES)
    picks = rng.integers(0, len(adult), ROWS)
    sex = adult["sex"].astype(str).to_numpy()[picks]
    race = adult["race"].astype(str).to_numpy()[picks]
    y = (rng.random(ROWS) < np.where(sex == "Male", 0.3, 0.12)).astype(int)
    p1 = np.clip(0.35 * y + 0.6 * rng.random(ROWS) + 0.02, 0.0, 1.0).round(6)
    pred = (p1 >= 0.5).astype(int)
    ids = np.array([raw.hex() for raw in np.frombuffer(rng.bytes(16 * ROWS), dtype="S16")])  # like uuid4().hex
    ts = NOW - 3600 * rng.random(ROWS) * WINDOW_HOURS * 0.9
    folder = model_dir / "predictions"
    folder.mkdir(parents=True)
    segment, written, handle = 0, 0, None
    id_list, ts_list, p_list, pred_list = ids.tolist(), ts.tolist(), p1.tolist(), pred.tolist()  # Python reprs
    for i in range(ROWS):
        if handle is None or written >= SEGMENT_BYTES:
            if handle is not None:
                handle.close()
            segment += 1
            handle = open(folder / f"20300101T0000{segment:02d}-1.jsonl", "w", encoding="utf-8")  # noqa: SIM115
            written = 0
        line = (
            f'{{"id": "{id_list[i]}", "row": 0, "ts": {ts_list[i]!r}, "version": 1, "prediction": {pred_list[i]}, '
            f'"proba": [{1 - p_list[i]!r}, {p_list[i]!r}]}}\n'
        )
        written += handle.write(line)
    assert handle is not None
    handle.close()
    for path in folder.iterdir():  # written "now" on the benchmark's clock, as the router would have
        os.utime(path, (NOW, NOW))
    feedback = model_dir / "feedback"
    feedback.mkdir()
    order = rng.permutation(ROWS)  # labels come back in another order than the predictions went out
    labels = np.array(CLASSES)[y]
    for b, chunk in enumerate(np.array_split(order, BATCHES)):
        table = pa.table(
            {
                "request_id": pa.array(ids[chunk], pa.string()),
                "row": pa.array(np.zeros(len(chunk), dtype=np.int64)),
                "label": pa.array(labels[chunk], pa.string()),
                "received_at": pa.array(np.full(len(chunk), NOW)),
                "attr.sex": pa.array(sex[chunk], pa.string()),
                "attr.race": pa.array(race[chunk], pa.string()),
            }
        )
        pq.write_table(table, feedback / f"batch-{b:02d}.parquet")
    return {"segments": segment, "log_mib": sum(f.stat().st_size for f in folder.iterdir()) / 2**20}


def ours(model_dir: Path) -> dict[str, Any]:
    """Our side: ``labelled_predictions`` then ``assess_version``."""
    from mlops_supervisor.policies.policy import MonitoringRules
    from mlops_supervisor.tools.monitoring._quality import assess_version, labelled_predictions

    rules = MonitoringRules(quality_window_hours=WINDOW_HOURS, fairness=LIMITS)
    since = NOW - WINDOW_HOURS * 3600
    started = time.perf_counter()
    frame = labelled_predictions(model_dir, since=since, classes={1: CLASSES})
    joined = time.perf_counter()
    result = assess_version("bench", 1, frame, classes=CLASSES, evaluation=EVALUATION, features=FEATURES, rules=rules)
    return {
        "split": {"read_and_join": joined - started, "metrics_and_fairness": time.perf_counter() - joined},
        "labelled": result["labelled"],
        "metrics": {k: v["live"] for k, v in result["metrics"].items()},
        "fairness": {f: {n: c["value"] for n, c in r["checks"].items()} for f, r in result["fairness"].items()},
        "alerts": len(result["alerts"]),
    }


def direct(model_dir: Path) -> dict[str, Any]:
    """The same computation written directly with pandas, scikit-learn and fairlearn."""
    import numpy as np
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn import metrics as m

    since = NOW - WINDOW_HOURS * 3600
    started = time.perf_counter()
    predictions = pd.concat(
        [pd.read_json(f, lines=True, engine="pyarrow") for f in sorted((model_dir / "predictions").glob("*.jsonl"))],
        ignore_index=True,
    )
    predictions = predictions[predictions["ts"] >= since].rename(columns={"id": "request_id"})
    feedback = pd.concat(
        [pd.read_parquet(f) for f in sorted((model_dir / "feedback").glob("*.parquet"))], ignore_index=True
    )
    joined = predictions.merge(feedback, on=["request_id", "row"], how="inner")
    read = time.perf_counter()
    y = joined["label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    pred = joined["prediction"].to_numpy()
    p = np.stack(joined["proba"].to_numpy())[:, 1]
    bins = np.clip(np.digitize(p, np.linspace(0, 1, 11)[1:-1]), 0, 9)
    ece = sum(abs(y[bins == b].mean() - p[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    metrics = {
        "accuracy": m.accuracy_score(y, pred),
        "f1": m.f1_score(y, pred),
        "roc_auc": m.roc_auc_score(y, p),
        "brier_score": m.brier_score_loss(y, p),
        "expected_calibration_error": ece,
    }
    scored = time.perf_counter()
    fairness = {}
    for feature in FEATURES:
        groups = joined[f"attr.{feature}"]
        MetricFrame(
            metrics={
                "count": count,
                "accuracy": m.accuracy_score,
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
            },
            y_true=y,
            y_pred=pred,
            sensitive_features=groups,
        ).by_group.to_dict("records")
        fairness[feature] = {
            "demographic_parity_difference": demographic_parity_difference(y, pred, sensitive_features=groups),
            "equalized_odds_difference": equalized_odds_difference(y, pred, sensitive_features=groups),
        }
    alerts = sum(v > LIMITS[n] for f in fairness.values() for n, v in f.items())
    done = time.perf_counter()
    return {
        "split": {"read_and_join": read - started, "metrics": scored - read, "fairness": done - scored},
        "labelled": len(joined),
        "metrics": {k: round(float(v), 6) for k, v in metrics.items()},
        "fairness": {f: {n: round(float(v), 6) for n, v in c.items()} for f, c in fairness.items()},
        "alerts": int(alerts),
    }


def worker(side: str, model_dir: str) -> None:
    """One side, in a fresh process: import its libraries, then time the computation from the files; print JSON."""
    import fairlearn.metrics  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.json
    import pyarrow.parquet  # noqa: F401
    import sklearn.metrics  # noqa: F401

    if side == "ours":
        import mlops_supervisor.tools.monitoring._quality  # noqa: F401
    started = time.perf_counter()
    out = (ours if side == "ours" else direct)(Path(model_dir))
    out["seconds"] = time.perf_counter() - started
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["rss_end_mib"] = rss_mib()
    print(json.dumps(out))


def run_side(side: str, model_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, str(model_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def agree(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Where the two sides' numbers differ (beyond rounding)."""
    problems = [] if a["labelled"] == b["labelled"] else [f"labelled {a['labelled']} vs {b['labelled']}"]
    for name, value in b["metrics"].items():
        if abs(a["metrics"][name] - value) > 1e-6:
            problems.append(f"{name} {a['metrics'][name]} vs {value}")
    for feature, checks in b["fairness"].items():
        for name, value in checks.items():
            if abs(a["fairness"][feature][name] - value) > 1e-6:
                problems.append(f"{name} by {feature} {a['fairness'][feature][name]} vs {value}")
    return problems


def section(args: argparse.Namespace, data: dict[str, Any], runs: dict[str, list[dict[str, Any]]], load: Any) -> str:
    med = statistics.median
    o_med, d_med = med(r["seconds"] for r in runs["ours"]), med(r["seconds"] for r in runs["direct"])
    rounds = ", ".join(
        f"{d['seconds']:.2f}/{o['seconds']:.2f}" for d, o in zip(runs["direct"], runs["ours"], strict=True)
    )
    first = runs["ours"][0]

    def split(side: str, part: str) -> float:
        return float(med(r["split"][part] for r in runs[side]))

    fair = "; ".join(
        f"{f}: demographic parity {c['demographic_parity_difference']:.4f}, equalized odds "
        f"{c['equalized_odds_difference']:.4f}"
        for f, c in first["fairness"].items()
    )
    paragraphs = [
        SECTION,
        f"`benchmarks/bench_feedback_quality.py` writes {ROWS:,} predictions of a binary classifier in the "
        f"router's prediction-log format ({data['segments']} JSONL segments rolled at 64 MiB, "
        f"{data['log_mib']:.0f} MiB, one line per record with its probabilities) and {ROWS:,} labels for them in "
        f"the feedback store's format ({BATCHES} Parquet batches, in another order than the predictions, with "
        "`attr.sex` and `attr.race` drawn with Adult's shares; seed 0). Both sides read the same files, each in a "
        "fresh process with its libraries imported before the clock starts, and time everything from the files "
        "to the numbers, interleaved in rounds:",
        "- **ours**: `labelled_predictions` (pyarrow's JSON and Parquet readers, the window filter, the join on "
        "`(request_id, row)`, label names to class indexes) and `assess_version` (accuracy, F1, ROC AUC, Brier "
        "score and expected calibration error beside the evaluation's values with their decay; fairlearn's "
        "`MetricFrame` per group and the demographic parity and equalized odds differences for both features, "
        "over the weighted cells described below, against the policy's limits; the alerts) from `tools/monitoring/_quality.py`.\n"
        '- **direct**: `pd.read_json(lines=True, engine="pyarrow")` per segment, `pd.read_parquet` per batch, '
        "the window filter, `merge`, the same scikit-learn metrics and ECE, and the same fairlearn `MetricFrame` "
        "and differences, written out in one function.",
        f"Measured ({args.rounds} rounds, medians): direct {d_med:.2f} s, ours {o_med:.2f} s, "
        f"**{o_med / d_med:.2f}x** (target ≤ 1.2x; rounds, direct/ours: {rounds} s; load average {load[0]:.2f} at "
        f"the start and {load[1]:.2f} at the end, on a {os.cpu_count()}-core machine that may be shared with other "
        "work). Peak RSS (`ru_maxrss`): direct "
        f"{med(r['peak_rss_mib'] for r in runs['direct']):,.0f} MiB, ours "
        f"{med(r['peak_rss_mib'] for r in runs['ours']):,.0f} MiB.",
        "Where the time goes (medians of the split each side times within its run): reading and joining, direct "
        f"{split('direct', 'read_and_join'):.2f} s, ours {split('ours', 'read_and_join'):.2f} s; the metrics and "
        f"fairness, direct {split('direct', 'metrics'):.2f} s + {split('direct', 'fairness'):.2f} s, ours "
        f"{split('ours', 'metrics_and_fairness'):.2f} s. fairlearn's `MetricFrame` (0.15) passes each column of each "
        "group through `np.stack`, which walks a 1-D array element by element in Python, so its cost grows with "
        "the rows; every one of these metrics is a ratio of counts, so ours hands fairlearn each distinct (group, "
        "label, prediction) cell once with its row count as the sample weight (`group_fairness`), which gives the "
        "same numbers (pinned by `tests/tools/test_quality.py` against the evaluation's `assess_fairness`).",
        f"Both sides give the same numbers (checked every round): {first['labelled']:,} labelled predictions; "
        + ", ".join(f"{k} {v:.4f}" for k, v in first["metrics"].items())
        + f"; {fair}.",
        f"Command: `python benchmarks/bench_feedback_quality.py --rounds {args.rounds}`, with the project venv's "
        "Python; `--write` updates the row above and this section.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def main() -> None:
    global ROWS  # one run, one size: the data, the row and the section all read it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--write", action="store_true", help="update the row and section in BENCHMARKS.md")
    parser.add_argument("--rows", type=int, default=ROWS, help="predictions and labels (a quick check: fewer)")
    parser.add_argument("--worker", nargs=2, metavar=("SIDE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    ROWS = args.rows
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "direct": []}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        model_dir = Path(tmp) / "serving" / "bench"
        started = time.perf_counter()
        data = make_data(model_dir)
        print(f"wrote the log and the feedback in {time.perf_counter() - started:.1f} s: {data}", file=sys.stderr)
        for i in range(args.rounds):
            sides = ["ours", "direct"] if i % 2 == 0 else ["direct", "ours"]
            for side in sides:
                runs[side].append(run_side(side, model_dir))
            o, d = runs["ours"][-1], runs["direct"][-1]
            problems = agree(o, d)
            if problems:
                raise SystemExit(f"the two sides disagree: {'; '.join(problems)}")
            print(
                f"round {i + 1}: direct {d['seconds']:.2f} s (peak {d['peak_rss_mib']:.0f} MiB), "
                f"ours {o['seconds']:.2f} s (peak {o['peak_rss_mib']:.0f} MiB)",
                file=sys.stderr,
            )
    load = (load_start, os.getloadavg()[0])
    o_med = statistics.median(r["seconds"] for r in runs["ours"])
    d_med = statistics.median(r["seconds"] for r in runs["direct"])
    row = (
        f"{ROW}, {ROWS:,} predictions (JSONL log) joined to {ROWS:,} labels (Parquet), 5 metrics, fairness by "
        f"2 features | pandas + scikit-learn + fairlearn written directly {d_med:.2f} s | `labelled_predictions` + "
        f"`assess_version` {o_med:.2f} s | **{o_med / d_med:.2f}x** (target ≤ 1.2x) "
        f"| `python benchmarks/bench_feedback_quality.py --rounds {args.rounds}` |"
    )
    print(row)
    if args.write:
        write_rows(ROOT / "BENCHMARKS.md", {ROW: row})
        write_section(ROOT / "BENCHMARKS.md", SECTION, section(args, data, runs, load))


if __name__ == "__main__":
    main()
