"""Wall time of the data + training stage: the governed pipeline against a hand-written script.

Both sides run as fresh processes on a fresh workspace / MLflow store, interleaved in
rounds; the median round of each is reported. Ours is the command users run:

    mlops-supervisor --workspace TMP run examples/adult-income.yaml --stop-after train --json

the competitor is ``benchmarks/handwritten_train.py``, the same training and MLflow logging
written directly against scikit-learn and MLflow. It prints a Markdown row and, with
--write, replaces the row in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _rows import write_rows  # noqa: E402

BIN = Path(sys.executable).parent
ROW = "| data + train stage, Adult"


def timed(cmd: list[str]) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--write", action="store_true", help="update the row in BENCHMARKS.md")
    args = parser.parse_args()
    ours_t, theirs_t = [], []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t, out = timed(
                [
                    str(BIN / "mlops-supervisor"),
                    "--workspace",
                    f"{tmp}/ws",
                    "run",
                    "examples/adult-income.yaml",
                    "--stop-after",
                    "train",
                    "--json",
                ]
            )
            best = next(o for o in json.loads(out)["outputs"] if o["tool"] == "train_model")["output"]["best"]
            ours_t.append(t)
        with tempfile.TemporaryDirectory() as tmp:
            t2, out2 = timed([sys.executable, "benchmarks/handwritten_train.py", tmp])
            theirs_t.append(t2)
        print(
            f"round {i + 1}: ours {t:.1f} s (val roc_auc {best['roc_auc']:.4f}), "
            f"hand-written {t2:.1f} s (val roc_auc {json.loads(out2)['val_roc_auc']:.4f})",
            file=sys.stderr,
        )
    ours, theirs = statistics.median(ours_t), statistics.median(theirs_t)
    row = (
        f"{ROW} (48,842 rows, 2 candidates x 2 settings, 3-fold CV) | hand-written script {theirs:.1f} s "
        f"| `run --stop-after train` {ours:.1f} s | **{ours / theirs:.2f}x** (target ≤ 1.3x) "
        f"| `python benchmarks/bench_train_stage.py --rounds {args.rounds}` |"
    )
    print(row)
    if args.write:
        write_rows(ROOT / "BENCHMARKS.md", {ROW: row})


if __name__ == "__main__":
    main()
