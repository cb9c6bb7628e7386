"""Evidently's side of ``benchmarks/bench_drift.py``: ``Report([DataDriftPreset()])`` on two parquet files.

Runs in its own environment (Evidently 0.7 needs pandas<3), built by bench_drift.py at
``benchmarks/.venv-evidently`` from ``benchmarks/requirements-evidently.txt``:

    benchmarks/.venv-evidently/bin/python benchmarks/evidently_drift.py REF.parquet CUR.parquet \
        --categorical '["workclass", ...]'

Times only the drift computation (wrapping the loaded frames in Evidently datasets and the
report run), not the interpreter start, the imports or the parquet read, and prints one JSON
object: seconds, the drifted columns (the failed per-column drift tests), per-column method,
score and threshold, and the process's memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from typing import Any

import pandas as pd
from _measure import rss_mib  # benchmarks/, this script's own directory
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference")
    parser.add_argument("current")
    parser.add_argument("--categorical", required=True, help="JSON list of the categorical columns")
    args = parser.parse_args()
    reference = pd.read_parquet(args.reference)
    current = pd.read_parquet(args.current)
    categorical = json.loads(args.categorical)
    numerical = [c for c in reference.columns if c not in categorical]
    loaded_mib = rss_mib()

    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    current_ds = Dataset.from_pandas(current, data_definition=definition)
    reference_ds = Dataset.from_pandas(reference, data_definition=definition)
    wrapped = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(current_ds, reference_ds)
    seconds = time.perf_counter() - started

    result = snapshot.dict()
    columns: dict[str, dict[str, Any]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type") == "evidently:metric_v2:ValueDrift":
            columns[config["column"]] = {
                "method": config["method"],
                "score": metric["value"],
                "threshold": config["threshold"],
            }
    for test in result["tests"]:
        column = test["metric_config"]["params"].get("column")
        if column in columns:
            columns[column]["drifted"] = test["status"] == "FAIL"
    count = next(m["value"]["count"] for m in result["metrics"] if m["config"]["type"].endswith("DriftedColumnsCount"))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "seconds_wrap": wrapped - started,
                "drifted": sorted(c for c, v in columns.items() if v.get("drifted")),
                "drifted_count_metric": count,
                "columns": columns,
                "rss_after_load_mib": loaded_mib,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
