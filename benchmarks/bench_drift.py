"""Drift computation: our ``drift_table`` against Evidently's ``DataDriftPreset`` on the same Adult samples.

The 14 Adult feature columns (``examples/data/adult.parquet`` minus the target ``class``) are
sampled with replacement into 1,000,000 reference rows and 200,000 current rows with ``age``
shifted by +8 years, plus a 200,000-row control sample without the shift; all three are written
to parquet once so both sides read identical data. Each side runs as a fresh process and times
only its drift computation on the already-loaded frames:

- ours: ``mlops_supervisor.tools.monitoring.drift_table(reference, current, psi_threshold=0.2,
  p_value=0.01, min_samples=100)`` in this interpreter (run the benchmark with the project's venv);
- Evidently: ``benchmarks/evidently_drift.py``, ``Report([DataDriftPreset()])`` with the same
  numeric / categorical split given in its ``DataDefinition``, in ``benchmarks/.venv-evidently``
  (Evidently 0.7 needs pandas<3), which is created on first use with ``uv`` from
  ``benchmarks/requirements-evidently.txt``.

Rounds are interleaved and the median of each side is reported with the drifted columns of both
sides on the shifted and the control sample. Prints a Markdown row and, with --write, updates the
row and the "Drift against Evidently" section of BENCHMARKS.md:

    .venv/bin/python benchmarks/bench_drift.py --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
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

DATA = ROOT / "examples" / "data" / "adult.parquet"
TARGET = "class"
EVIDENTLY_VENV = ROOT / "benchmarks" / ".venv-evidently"
EVIDENTLY_REQUIREMENTS = ROOT / "benchmarks" / "requirements-evidently.txt"
ROW = "| drift, Adult"
SECTION = "## Drift against Evidently"
REFERENCE_ROWS, CURRENT_ROWS, AGE_SHIFT = 1_000_000, 200_000, 8
SEEDS = {"reference": 0, "current": 1, "control": 2}


def worker(reference_path: str, current_path: str, categorical: list[str], split: bool) -> None:
    """Our side, in a fresh process: load both files, time ``drift_table`` alone, print JSON."""
    import pandas as pd

    from mlops_supervisor.tools.monitoring._drift import drift_table

    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    loaded_mib = rss_mib()
    # drift_table imports scipy.stats on its first call; import it first, like Evidently's side
    # imports evidently (and scipy) before its clock starts, and report the import on its own.
    started = time.perf_counter()
    import scipy.stats  # noqa: F401

    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    table = drift_table(reference, current, psi_threshold=0.2, p_value=0.01, min_samples=100)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds = {c: ("categorical" if c in categorical else "numeric") for c in reference.columns}
    wrong = {c: r.get("kind") for c, r in table.items() if r.get("kind") != kinds[c]}
    if wrong:
        raise SystemExit(f"drift_table typed columns differently from the benchmark's split: {wrong}")
    out: dict[str, Any] = {
        "seconds": seconds,
        "import_seconds": import_seconds,
        "drifted": sorted(c for c, r in table.items() if r["drifted"]),
        "columns": {
            c: {k: r[k] for k in ("kind", "test", "psi", "statistic", "p_value", "drifted")} for c, r in table.items()
        },
        "rss_after_load_mib": loaded_mib,
        "peak_rss_mib": peak_mib,
    }
    if split:  # where the time goes, after the measured call: numeric and categorical columns alone
        for kind in ("numeric", "categorical"):
            cols = [c for c in reference.columns if kinds[c] == kind]
            started = time.perf_counter()
            drift_table(reference[cols], current[cols], psi_threshold=0.2, p_value=0.01, min_samples=100)
            out[f"seconds_{kind}"] = time.perf_counter() - started
    print(json.dumps(out))


def find_uv() -> str:
    """``uv`` beside the running interpreter (where ``make setup`` puts it), else the one on PATH."""
    # Not resolved: a venv's python is a symlink to the base interpreter, whose folder has no uv.
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("uv")
    if on_path is None:
        raise SystemExit(
            f"uv is needed to build benchmarks/.venv-evidently: none at {beside} (beside the running Python) "
            "nor on PATH. Run `make setup` (it installs uv into .venv/bin) or `pip install uv`."
        )
    return on_path


def evidently_python() -> Path:
    """The Evidently venv's interpreter, creating or refreshing the venv when the requirements changed."""
    python = EVIDENTLY_VENV / "bin" / "python"
    digest = hashlib.sha256(EVIDENTLY_REQUIREMENTS.read_bytes()).hexdigest()
    stamp = EVIDENTLY_VENV / ".requirements-sha256"
    if python.exists() and stamp.exists() and stamp.read_text("ascii").strip() == digest:
        return python
    uv = find_uv()
    print(f"building {EVIDENTLY_VENV.relative_to(ROOT)} ...", file=sys.stderr)
    base = getattr(sys, "_base_executable", sys.executable)
    for cmd in (
        [uv, "venv", "--quiet", "--allow-existing", "--python", base, str(EVIDENTLY_VENV)],
        [uv, "pip", "install", "--quiet", "--python", str(python), "-r", str(EVIDENTLY_REQUIREMENTS)],
    ):
        subprocess.run(cmd, check=True)
    stamp.write_text(digest + "\n", "ascii")
    return python


def make_data(tmp: Path) -> tuple[list[str], list[str]]:
    """Write reference, shifted current and control samples to ``tmp``; return (columns, categorical)."""
    import numpy as np
    import pandas as pd

    adult = pd.read_parquet(DATA)
    adult = adult.drop(columns=[TARGET], errors="ignore")
    categorical = [
        c for c in adult.columns if not pd.api.types.is_numeric_dtype(adult[c]) or pd.api.types.is_bool_dtype(adult[c])
    ]
    for name, rows in (("reference", REFERENCE_ROWS), ("current", CURRENT_ROWS), ("control", CURRENT_ROWS)):
        picks = np.random.default_rng(SEEDS[name]).integers(0, len(adult), rows)
        sample = adult.iloc[picks].reset_index(drop=True)
        if name == "current":
            sample["age"] = sample["age"] + AGE_SHIFT
        sample.to_parquet(tmp / f"{name}.parquet", index=False)
    return list(adult.columns), categorical


def run_side(cmd: list[str]) -> dict[str, Any]:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:2])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fmt_cols(cols: list[str]) -> str:
    return ", ".join(f"`{c}`" for c in cols) if cols else "none"


def section(
    args: argparse.Namespace,
    columns: list[str],
    categorical: list[str],
    ours: dict[str, Any],
    theirs: dict[str, Any],
) -> str:
    """The BENCHMARKS.md section, from this run's measurements (one line per paragraph or bullet)."""
    o_run, e_run = ours["runs"], theirs["runs"]
    med = statistics.median
    o_med, e_med = med(r["seconds"] for r in o_run), med(r["seconds"] for r in e_run)
    o_age, e_age = o_run[0]["columns"]["age"], e_run[0]["columns"]["age"]
    rounds = ", ".join(f"{e['seconds']:.1f}/{o['seconds']:.2f}" for e, o in zip(e_run, o_run, strict=True))
    numeric = [c for c in columns if c not in categorical]
    methods: dict[str, list[str]] = {}
    for column, v in e_run[0]["columns"].items():
        methods.setdefault(f"{v['method']} (drifted at ≥ {v['threshold']:g})", []).append(column)
    used = "; ".join(f"{m} for {fmt_cols(cs)}" for m, cs in methods.items())

    def verdict(o: dict[str, Any], e: dict[str, Any]) -> str:
        same = "they agree" if o["drifted"] == e["drifted"] else "they **disagree**"
        e_other = max((v for c, v in e["columns"].items() if c not in e["drifted"]), key=lambda v: v["score"])
        o_other = max((v for c, v in o["columns"].items() if c not in o["drifted"]), key=lambda v: v["psi"])
        return (
            f"Evidently flagged {fmt_cols(e['drifted'])}, ours {fmt_cols(o['drifted'])} ({same}); the largest score "
            f"among the other columns: Evidently {e_other['score']:.3f} (threshold {e_other['threshold']:g}), "
            f"ours PSI {o_other['psi']:.4f} (threshold 0.2)"
        )

    shifted_o = {**o_run[0], "drifted": ours["shifted_drifted"]}
    shifted_e = {**e_run[0], "drifted": theirs["shifted_drifted"]}
    paragraphs = [
        SECTION,
        f"`benchmarks/bench_drift.py` samples the {len(columns)} Adult feature columns "
        f"(`examples/data/adult.parquet` without the target `{TARGET}`; numeric: {fmt_cols(numeric)}; "
        f"categorical: {fmt_cols(categorical)}) with replacement into {REFERENCE_ROWS:,} reference rows and "
        f"{CURRENT_ROWS:,} current rows with `age` shifted by +{AGE_SHIFT} years, plus a {CURRENT_ROWS:,}-row "
        f"control sample without the shift (seeds {SEEDS['reference']}, {SEEDS['current']}, {SEEDS['control']}). "
        "All three are written to parquet once and both sides read the same files, each in a fresh process, "
        "timing only the drift computation on the loaded frames, interleaved in rounds:",
        "- **ours**: `drift_table(reference, current, psi_threshold=0.2, p_value=0.01, min_samples=100)` from "
        "`tools/monitoring/_drift.py`. Numeric columns: PSI over the reference deciles and the two-sample "
        "Kolmogorov-Smirnov test (asymptotic p-value); categorical columns: PSI over category shares "
        "(categories under 1 % of the reference pooled) and a chi-square test of the current counts against the "
        "reference shares. A column is drifted when PSI > 0.2 **and** p < 0.01. Not timed: importing "
        "`scipy.stats`, which `drift_table` does on its first call in a process "
        f"({med(r['import_seconds'] for r in o_run):.2f} s here), done before the clock starts as Evidently's "
        "imports are.",
        "- **Evidently** 0.7.23: `Report([DataDriftPreset()])` on `Dataset.from_pandas` with a `DataDefinition` "
        "naming the same numeric and categorical columns, in its own venv (`benchmarks/.venv-evidently`, "
        "pandas<3). With more than 1,000 reference rows its default tests (`_get_default_stattest` in "
        "`evidently/legacy/calculations/stattests/registry.py`) are the Wasserstein distance normed by the "
        "reference standard deviation for numeric columns with more than 5 distinct values and the "
        "Jensen-Shannon distance for categorical columns (and numeric ones with at most 5 values); a column is "
        f"drifted when its distance is at least the threshold. Used here: {used}. The preset also builds the "
        "plot data of every column's widget and computes each column's drift twice (for the drifted-columns "
        "count and for each `ValueDrift` metric). Its time includes wrapping the two frames in `Dataset`s "
        f"(median {med(r['seconds_wrap'] for r in e_run):.1f} s); its drifted columns are its failed per-column "
        "tests.",
        "The tests differ, so the verdicts need not agree in general: Evidently's are effect sizes with no "
        "sampling-error term, ours need both an effect (PSI) and significance.",
        f"Measured ({args.rounds} rounds, medians): Evidently {e_med:.1f} s, ours {o_med:.2f} s, "
        f"**{e_med / o_med:.1f}x** (rounds, Evidently/ours: {rounds} s; load average {ours['load'][0]:.2f} at the "
        f"start and {ours['load'][1]:.2f} at the end, on a 2-core machine shared with other work). Ours split by "
        f"column kind (one extra call each, after the measured one): numeric {o_run[0]['seconds_numeric']:.2f} s, "
        f"categorical {o_run[0]['seconds_categorical']:.2f} s.",
        f"- Shifted sample: {verdict(shifted_o, shifted_e)}. `age`: Evidently {e_age['score']:.3f}; ours PSI "
        f"{o_age['psi']:.3f}, KS statistic {o_age['statistic']:.3f}, p = {o_age['p_value']:.3g}.\n"
        f"- Control sample (no shift): {verdict(ours['control'], theirs['control'])}.\n"
        "- Memory, peak RSS of each process (`ru_maxrss`; interpreter, imports and parquet read included): "
        f"Evidently {med(r['peak_rss_mib'] for r in e_run):,.0f} MiB (RSS after loading the frames "
        f"{med(r['rss_after_load_mib'] for r in e_run):,.0f} MiB), ours {med(r['peak_rss_mib'] for r in o_run):,.0f} "
        f"MiB (after loading {med(r['rss_after_load_mib'] for r in o_run):,.0f} MiB).",
        f"Command: `python benchmarks/bench_drift.py --rounds {args.rounds}`, with the project venv's Python; "
        "`--write` updates the row above and this section.",
    ]
    return "\n\n".join(paragraphs).replace("\n\n- **Evidently**", "\n- **Evidently**") + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--write", action="store_true", help="update the row and section in BENCHMARKS.md")
    parser.add_argument("--worker", nargs=2, metavar=("REF", "CUR"), help=argparse.SUPPRESS)
    parser.add_argument("--categorical", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--split", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, categorical=json.loads(args.categorical), split=args.split)
        return

    evidently = str(evidently_python())
    load_start = os.getloadavg()[0]
    ours: dict[str, Any] = {"runs": []}
    theirs: dict[str, Any] = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp_name:
        tmp = Path(tmp_name)
        columns, categorical = make_data(tmp)
        print(
            f"{len(columns)} columns ({TARGET!r} dropped): {', '.join(columns)}; categorical: {', '.join(categorical)}",
            file=sys.stderr,
        )
        cats = json.dumps(categorical)
        ref = str(tmp / "reference.parquet")

        def ours_cmd(cur: str, split: bool = False) -> list[str]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", ref, cur, "--categorical", cats]
            return cmd + (["--split"] if split else [])

        def theirs_cmd(cur: str) -> list[str]:
            return [evidently, str(ROOT / "benchmarks" / "evidently_drift.py"), ref, cur, "--categorical", cats]

        cur = str(tmp / "current.parquet")
        for i in range(args.rounds):
            sides = [("ours", ours, ours_cmd(cur, split=i == 0)), ("evidently", theirs, theirs_cmd(cur))]
            for _, store, cmd in sides if i % 2 == 0 else sides[::-1]:
                store["runs"].append(run_side(cmd))
            o, e = ours["runs"][-1], theirs["runs"][-1]
            print(
                f"round {i + 1}: Evidently {e['seconds']:.1f} s (flagged {e['drifted']}, "
                f"peak {e['peak_rss_mib']:.0f} MiB), ours {o['seconds']:.2f} s (flagged {o['drifted']}, "
                f"peak {o['peak_rss_mib']:.0f} MiB)",
                file=sys.stderr,
            )
        control = str(tmp / "control.parquet")
        ours["control"], theirs["control"] = run_side(ours_cmd(control)), run_side(theirs_cmd(control))
        print(
            f"control: Evidently {theirs['control']['seconds']:.1f} s flagged {theirs['control']['drifted']}, "
            f"ours {ours['control']['seconds']:.2f} s flagged {ours['control']['drifted']}",
            file=sys.stderr,
        )
    ours["load"] = (load_start, os.getloadavg()[0])
    for side in (ours, theirs):
        verdicts = {tuple(r["drifted"]) for r in side["runs"]}
        if len(verdicts) != 1:
            raise SystemExit(f"verdicts changed between rounds on identical data: {verdicts}")
        side["shifted_drifted"] = list(verdicts.pop())
    o_med = statistics.median(r["seconds"] for r in ours["runs"])
    e_med = statistics.median(r["seconds"] for r in theirs["runs"])
    same = ours["shifted_drifted"] == theirs["shifted_drifted"]
    row = (
        f"{ROW} {REFERENCE_ROWS:,} x {CURRENT_ROWS:,} rows, {len(columns)} columns, age +{AGE_SHIFT} years "
        f"(same drifted columns: {'yes' if same else 'no'}) | Evidently DataDriftPreset {e_med:.1f} s "
        f"| drift_table {o_med:.2f} s | **{e_med / o_med:.1f}x** (target ≥ 10x) "
        f"| `python benchmarks/bench_drift.py --rounds {args.rounds}` |"
    )
    print(row)
    if args.write:
        write_rows(ROOT / "BENCHMARKS.md", {ROW: row})
        write_section(ROOT / "BENCHMARKS.md", SECTION, section(args, columns, categorical, ours, theirs))


if __name__ == "__main__":
    main()
