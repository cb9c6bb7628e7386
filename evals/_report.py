"""What an eval run reports: pass^k, JUnit XML, the JSON report, the terminal summary, the baseline.

The runner produces an ``EvalReport``; everything here reads it and returns text, XML or
JSON; the command line writes the files.
"""

from __future__ import annotations

import difflib
import json
import math
import platform
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mlops_supervisor.policies.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from mlops_supervisor.evals._runner import EvalReport, Mismatch, TrialResult

__all__ = [
    "REPORT_FORMAT",
    "EvalPlan",
    "Regression",
    "check_eval_options",
    "compare_to_baseline",
    "failure_text",
    "json_report",
    "junit_xml",
    "load_baseline",
    "mismatch_text",
    "pass_hat_k",
    "print_summary",
]

REPORT_FORMAT = "mlops-supervisor-eval-report"
REPORT_VERSION = 1


class _Counted(Protocol):
    """What pass^k needs of a scenario's result: its id, its passes and its trials."""

    @property
    def id(self) -> str: ...
    @property
    def passes(self) -> int: ...
    @property
    def n(self) -> int: ...


def pass_hat_k(results: Sequence[_Counted], k: int) -> float:
    """pass^k: the mean over scenarios of C(c, k) / C(n, k), c passes of n trials.

    The chance that k trials drawn from a scenario's n all passed, averaged over scenarios.
    ``UsageError`` when k < 1, when there are no scenarios, or naming the scenarios with n < k.
    """
    if k < 1:
        raise UsageError(f"k must be at least 1, got {k}")
    if not results:
        raise UsageError("pass^k needs at least one scenario; none were run")
    short = [f"{r.id} ({r.n} trials)" for r in results if r.n < k]
    if short:
        raise UsageError(f"pass^{k} needs at least {k} trials of each scenario; too few: {', '.join(short)}")
    return sum(math.comb(r.passes, k) / math.comb(r.n, k) for r in results) / len(results)


# --- readable mismatches -------------------------------------------------------------------


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _diff_lines(expected: Any, actual: Any) -> list[str]:
    """``expected: X`` / ``actual: Y`` for short values; a unified diff of the pretty JSON otherwise."""
    want, got = _pretty(expected), _pretty(actual)
    if "\n" not in want and "\n" not in got:
        return [f"  expected: {want}", f"  actual:   {got}"]
    diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "expected", "actual", lineterm="", n=3)
    return [f"  {line}" for line in diff]


def mismatch_text(mismatch: Mismatch) -> str:
    """One mismatch as plain text: where, the message, then expected against actual."""
    head = f"{mismatch.where}: {mismatch.message}" if mismatch.message else mismatch.where
    return "\n".join([head, *_diff_lines(mismatch.expected, mismatch.actual)])


def failure_text(trial: TrialResult) -> str:
    """Why a trial failed, as plain text: its error (if it raised) and every mismatch."""
    parts = [f"error: {trial.error}"] if trial.error else []
    parts += [mismatch_text(m) for m in trial.mismatches]
    return "\n".join(parts) if parts else "failed without a recorded mismatch"


def _one_line(trial: TrialResult) -> str:
    if trial.error:
        return trial.error.strip().splitlines()[0] if trial.error.strip() else "error"
    count = len(trial.mismatches)
    first = trial.mismatches[0] if trial.mismatches else None
    if first is None:
        return "failed"
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{first.where}: {first.message}{more}"


# --- JUnit XML -----------------------------------------------------------------------------

_XML_ILLEGAL = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0xFFFE, 0xFFFF}


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (ANSI escapes, NUL), so parsers accept the file."""
    return "".join(ch for ch in text if ord(ch) not in _XML_ILLEGAL and not 0xD800 <= ord(ch) <= 0xDFFF)


def _properties(parent: ET.Element, values: dict[str, str]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in values.items():
        ET.SubElement(props, "property", name=name, value=_xml_text(value))


def junit_xml(report: EvalReport, *, k: int | None = None) -> bytes:
    """The report as JUnit XML: one testsuite; one testcase per scenario, or per trial when it ran several.

    A failed trial carries a ``failure`` (its mismatches as readable text), a trial that raised
    an ``error``; each testcase holds its severity, tags and guarantee as properties.
    """
    k = k if k is not None else report.k
    cases: list[ET.Element] = []
    failures = errors = 0
    for result in report.results:
        per_trial = len(result.trials) > 1
        groups = [[t] for t in result.trials] if per_trial else [result.trials]
        for trials in groups:
            name = f"{result.id} [trial {trials[0].trial}]" if per_trial else result.id
            case = ET.Element(
                "testcase",
                name=name,
                classname=f"evals.{result.severity}",
                time=f"{sum(t.duration_s for t in trials):.3f}",
            )
            props = {"severity": result.severity, "tags": ",".join(result.tags), "guarantee": result.guarantee}
            if per_trial:
                props["trial"] = str(trials[0].trial)
            _properties(case, props)
            for trial in trials:
                if trial.passed:
                    continue
                kind = "error" if trial.error else "failure"
                errors += kind == "error"
                failures += kind == "failure"
                node = ET.SubElement(case, kind, message=_xml_text(_one_line(trial)), type=f"eval.{kind}")
                node.text = _xml_text(failure_text(trial))
            cases.append(case)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="mlops-supervisor eval",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{report.wall_s:.3f}",
        timestamp=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        hostname=_xml_text(platform.node() or "localhost"),
    )
    suite_props = {"model": report.model, "trials": str(report.trials), "workers": str(report.workers)}
    if all(len(r.trials) >= k for r in report.results) and report.results:
        suite_props.update({"k": str(k), "pass_hat_k": f"{pass_hat_k(report.results, k):.6f}"})
    _properties(suite, suite_props)
    suite.extend(cases)
    ET.indent(suites)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


# --- the JSON report and the baseline ------------------------------------------------------


@dataclass(frozen=True)
class Regression:
    """A scenario that did worse than in the baseline."""

    id: str
    kind: Literal["newly failing", "pass rate dropped"]
    before: tuple[int, int]  # (passes, trials) in the baseline
    after: tuple[int, int]

    def describe(self) -> str:
        """``id: newly failing (3/3 → 1/3)``."""
        (bp, bn), (ap, an) = self.before, self.after
        return f"{self.id}: {self.kind} ({bp}/{bn} → {ap}/{an})"


def json_report(
    report: EvalReport,
    *,
    k: int,
    command: Sequence[str],
    regressions: Sequence[Regression] = (),
    min_pass_hat_k: float | None = None,
) -> dict[str, Any]:
    """The report as one JSON object: the ``EvalReport`` as dumped, plus pass^k, the command line and
    the scenarios that got worse than the baseline (a file ``load_baseline`` reads back). With
    ``min_pass_hat_k``, a pass^k below it is a missed threshold: exit code 1."""
    body = report.model_dump(mode="json")
    for dumped, result in zip(body["results"], report.results, strict=True):
        dumped["passes"], dumped["n"] = result.passes, result.n
    score = pass_hat_k(report.results, k)
    missed = min_pass_hat_k is not None and score < min_pass_hat_k
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "command": list(command),
        **body,
        "k": k,
        "pass_hat_k": score,
        "min_pass_hat_k": min_pass_hat_k,
        "threshold_missed": missed,
        "blockers_failed": list(report.blockers_failed),
        "regressions": [
            {"id": r.id, "kind": r.kind, "before": list(r.before), "after": list(r.after)} for r in regressions
        ],
        "exit_code": report.exit_code or (1 if regressions or missed else 0),
    }


def load_baseline(path: Path) -> dict[str, tuple[int, int]]:
    """Each scenario's (passes, trials) in a JSON report written earlier by ``mlops-supervisor eval --json``.

    ``UsageError`` naming the file when it is missing, not JSON, or not one of our reports.
    """
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"baseline {path} does not exist; pass a JSON report from `mlops-supervisor eval --json FILE`"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"baseline {path} cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"baseline {path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("format") != REPORT_FORMAT:
        raise UsageError(
            f'baseline {path} is not an eval report (no "format": "{REPORT_FORMAT}"); '
            "pass a JSON report from `mlops-supervisor eval --json FILE`"
        )
    if doc.get("version") != REPORT_VERSION:
        raise UsageError(
            f"baseline {path} is report version {doc.get('version')!r}; this version reads {REPORT_VERSION}"
        )
    counts: dict[str, tuple[int, int]] = {}
    results = doc.get("results")
    if not isinstance(results, list):
        raise UsageError(f'baseline {path} has no "results" list')
    for index, result in enumerate(results):
        trials = result.get("trials") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("id"), str) or not isinstance(trials, list):
            raise UsageError(f"baseline {path}: results[{index}] has no id and trials")
        if not all(isinstance(t, dict) and isinstance(t.get("passed"), bool) for t in trials):
            raise UsageError(f"baseline {path}: results[{index}] ({result['id']}) has a trial without passed")
        counts[result["id"]] = (sum(t["passed"] for t in trials), len(trials))
    return counts


def compare_to_baseline(report: EvalReport, baseline: dict[str, tuple[int, int]]) -> list[Regression]:
    """The scenarios whose pass rate dropped since the baseline; a scenario new since then is not worse."""
    worse = []
    for result in report.results:
        before = baseline.get(result.id)
        if before is None or before[1] == 0 or result.n == 0:
            continue
        if result.passes / result.n < before[0] / before[1]:
            kind: Literal["newly failing", "pass rate dropped"] = (
                "newly failing" if before[0] == before[1] else "pass rate dropped"
            )
            worse.append(Regression(result.id, kind, before, (result.passes, result.n)))
    return worse


# --- the command line's input --------------------------------------------------------------


@dataclass(frozen=True)
class EvalPlan:
    """The eval command's options, checked before anything runs or is written."""

    paths: list[Path]
    k: int
    json_file: Path | None
    baseline: dict[str, tuple[int, int]] | None


def _check_output(path: Path, option: str) -> None:
    """``UsageError`` unless ``path`` can be written: not a folder, and under a folder (or a path that can be one)."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path} cannot be written: {parent} is not a folder")


def check_eval_options(
    *,
    paths: list[Path],
    trials: int,
    workers: int,
    k: int | None,
    junit: Path | None,
    json_file: Path | None,
    baseline: Path | None,
) -> EvalPlan:
    """Every option of ``mlops-supervisor eval`` checked up front: ``UsageError`` naming the first bad one."""
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    k = trials if k is None else k
    if not 1 <= k <= trials:
        raise UsageError(f"--k must be between 1 and --trials ({trials}), got {k}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"scenario path {', '.join(missing)} does not exist; give YAML files or folders of them")
    for path, option in ((junit, "--junit"), (json_file, "--json")):
        if path is not None:
            _check_output(path, option)
    if junit is not None and json_file is not None and junit.absolute() == json_file.absolute():
        raise UsageError(f"--junit and --json both name {junit}; give two files")
    return EvalPlan(
        paths=paths, k=k, json_file=json_file, baseline=load_baseline(baseline) if baseline is not None else None
    )


# --- the terminal summary ------------------------------------------------------------------


def _diff_style(line: str) -> str:
    body = line.lstrip()
    if body.startswith(("---", "+++")):
        return "bold"
    if body.startswith("@@"):
        return "cyan"
    if body.startswith("-") or body.startswith("expected:"):
        return "red"
    if body.startswith("+") or body.startswith("actual:"):
        return "green"
    return ""


def print_summary(report: EvalReport, console: Console, *, k: int, regressions: Sequence[Regression] = ()) -> None:
    """A table of scenarios (severity, passes/trials, time), then what each failure expected and got."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"eval: {report.model}, {report.trials} trial(s), {report.workers} worker(s)")
    for column in ("scenario", "severity", "passes/trials", "time"):
        table.add_column(column, justify="right" if column in ("passes/trials", "time") else "left")
    worse = {r.id for r in regressions}
    for result in report.results:
        ok = result.passes == result.n
        colour = "green" if ok else ("red" if result.severity == "blocker" else "yellow")
        mark = "" if result.id not in worse else " (worse than baseline)"
        table.add_row(
            Text(result.id + mark),
            Text(result.severity, style="bold" if result.severity == "blocker" else ""),
            Text(f"{result.passes}/{result.n}", style=colour),
            f"{sum(t.duration_s for t in result.trials):.1f}s",
        )
    console.print(table)

    for result in report.results:
        failed = [t for t in result.trials if not t.passed]
        if not failed:
            continue
        console.print(Text(f"\n✗ {result.id} ({result.severity}): {result.guarantee}", style="bold red"))
        # Trials that failed the same way are shown once.
        seen: dict[str, list[int]] = {}
        for trial in failed:
            seen.setdefault(failure_text(trial), []).append(trial.trial)
        for text, numbers in seen.items():
            if len(result.trials) > 1:
                console.print(Text(f"  trial {', '.join(map(str, numbers))}", style="dim"))
            for line in text.splitlines():
                console.print(Text("  " + line, style=_diff_style(line)), soft_wrap=True)

    passed_all = sum(r.passes == r.n for r in report.results)
    lines = [f"{passed_all} of {len(report.results)} scenarios passed every trial in {report.wall_s:.1f}s"]
    if report.results and all(r.n >= k for r in report.results):
        lines.append(f"pass^{k} = {pass_hat_k(report.results, k):.3f}")
    console.print(Text("\n" + "; ".join(lines), style="bold"))
    if report.blockers_failed:
        console.print(Text(f"blockers failed: {', '.join(report.blockers_failed)}", style="bold red"))
    for regression in regressions:
        console.print(Text(f"worse than the baseline: {regression.describe()}", style="bold red"))
