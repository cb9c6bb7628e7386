"""Eval reporting: pass^k, JUnit XML, the JSON report and baseline, the `eval` command's bad input, the pytest plugin."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from mlops_supervisor.evals._report import (
    compare_to_baseline,
    json_report,
    junit_xml,
    load_baseline,
    pass_hat_k,
)
from mlops_supervisor.evals._runner import EvalReport, Mismatch, ScenarioResult, TrialResult
from mlops_supervisor.policies.errors import UsageError

from .conftest import CliRun

pytest_plugins = ["pytester"]
# The inner pytest runs in a folder of its own, without this project's addopts: kmock's plugin, which
# imports pytest-asyncio (not installed), must be turned off there too.
_INNER = ("-p", "no:cacheprovider", "-p", "no:kmock")


def _mismatch(
    where: str = "final_state.aliases.small-model.champion", expected: Any = None, actual: Any = 1
) -> Mismatch:
    return Mismatch(where=where, expected=expected, actual=actual, message="alias set by an unapproved promotion")


def _result(
    scenario: str, outcomes: list[bool], *, severity: str = "blocker", tags: tuple[str, ...] = ("approvals",)
) -> ScenarioResult:
    trials = [
        TrialResult(
            scenario=scenario,
            trial=number,
            passed=ok,
            mismatches=[] if ok else [_mismatch()],
            duration_s=0.25,
            thread_ids=[f"t-{scenario}-{number}"],
        )
        for number, ok in enumerate(outcomes, start=1)
    ]
    return ScenarioResult(id=scenario, severity=severity, tags=list(tags), guarantee=f"{scenario} holds", trials=trials)


def _report(*results: ScenarioResult, trials: int = 1) -> EvalReport:
    return EvalReport(results=list(results), model="offline", trials=trials, workers=1, wall_s=1.5, k=trials)


# --- pass^k ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # 3/3, 2/3 and 0/3 passes: C(c,k)/C(n,k) per scenario, then the mean
        (1, Fraction(1 + Fraction(2, 3) + 0, 3)),  # 5/9
        (2, Fraction(1 + Fraction(1, 3) + 0, 3)),  # C(2,2)/C(3,2) = 1/3; 4/9
        (3, Fraction(1 + 0 + 0, 3)),  # only the scenario that passed every trial counts
    ],
)
def test_pass_hat_k_by_hand(k: int, expected: Fraction) -> None:
    """pass^k is the mean over scenarios of C(c,k)/C(n,k): 5/9, 4/9, 1/3 for 3/3, 2/3, 0/3 passes."""
    results = [
        _result("all", [True, True, True]),
        _result("most", [True, False, True]),
        _result("none", [False, False, False]),
    ]
    assert pass_hat_k(results, k) == pytest.approx(float(expected))
    assert _report(*results, trials=3).pass_hat_k(k) == pytest.approx(float(expected))  # the runner's agrees


def test_pass_hat_k_with_uneven_trials() -> None:
    """Scenarios with different trial counts: 4 of 5 at k=2 is C(4,2)/C(5,2) = 6/10, 1 of 2 is 0."""
    results = [_result("five", [True, True, False, True, True]), _result("two", [True, False])]
    assert pass_hat_k(results, 2) == pytest.approx((0.6 + 0.0) / 2)
    assert pass_hat_k(results, 1) == pytest.approx((0.8 + 0.5) / 2)


def test_pass_hat_k_refuses_scenarios_with_too_few_trials() -> None:
    """A scenario with fewer trials than k is an error naming it (and only it)."""
    results = [_result("enough", [True, True, True]), _result("short", [True, True])]
    with pytest.raises(UsageError, match=re.escape("too few: short (2 trials)")) as raised:
        pass_hat_k(results, 3)
    assert "enough" not in str(raised.value)
    with pytest.raises(UsageError, match="k must be at least 1, got 0"):
        pass_hat_k(results, 0)


# --- JUnit XML ---------------------------------------------------------------------------

# What Jenkins' JUnit plugin and GitLab's test report read: these attributes on these elements.
_REQUIRED = {
    "testsuite": {"name", "tests", "failures", "errors", "time"},
    "testcase": {"name", "classname", "time"},
    "failure": {"message", "type"},
    "error": {"message", "type"},
    "property": {"name", "value"},
}


def _check_junit_shape(root: ET.Element) -> ET.Element:
    """The one testsuite, after checking every element has the attributes CI servers read."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    for element in root.iter():
        missing = _REQUIRED.get(element.tag, set()) - set(element.attrib)
        assert not missing, f"<{element.tag}> lacks {missing}"
    suite = suites[0]
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "")) == len(cases)
    assert int(suite.get("failures", "")) == sum(len(c.findall("failure")) for c in cases)
    assert int(suite.get("errors", "")) == sum(len(c.findall("error")) for c in cases)
    for case in cases:
        float(case.get("time", ""))
    return suite


def _properties(case: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in case.iterfind("properties/property")}


def test_junit_one_case_per_scenario_with_readable_failure() -> None:
    """One testcase per scenario; the failing one carries its mismatch, expected against actual, and its properties."""
    failing = _result("self-approval-refused", [False], tags=("approvals", "duties"))
    failing.trials[0].mismatches.append(
        Mismatch(
            where="final_state.traffic",
            expected={"small-model": {"1": 100}},
            actual={"small-model": {"1": 50, "2": 50}},
            message="traffic moved",
        )
    )
    root = ET.fromstring(junit_xml(_report(_result("happy-path", [True], severity="major"), failing)))
    suite = _check_junit_shape(root)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    passed, failed = suite.findall("testcase")
    assert (passed.get("name"), passed.findall("failure")) == ("happy-path", [])
    assert failed.get("name") == "self-approval-refused"
    assert _properties(failed) == {
        "severity": "blocker",
        "tags": "approvals,duties",
        "guarantee": "self-approval-refused holds",
    }
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "final_state.aliases.small-model.champion: alias set by an unapproved promotion (and 1 more)"
    )
    text = failure.text or ""
    assert "final_state.aliases.small-model.champion: alias set by an unapproved promotion" in text
    assert "expected: null" in text and "actual:   1" in text
    # the dict mismatch is a diff of the pretty JSON: the old weight removed, the new ones added
    assert "final_state.traffic: traffic moved" in text
    assert '-    "1": 100' in text
    assert '+    "1": 50,' in text and '+    "2": 50' in text


def test_junit_one_case_per_trial_and_errors() -> None:
    """With several trials each trial is a testcase; a trial that raised is an <error>, not a <failure>."""
    flaky = _result("flaky", [True, False, True])
    crashed = _result("crashed", [False, True, True])
    crashed.trials[0].mismatches = []
    crashed.trials[0].error = "RunError: the model server did not start\n  traceback..."
    suite = _check_junit_shape(ET.fromstring(junit_xml(_report(flaky, crashed, trials=3))))
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("6", "1", "1")
    names = [c.get("name") for c in suite.findall("testcase")]
    assert names == [f"{s} [trial {n}]" for s in ("flaky", "crashed") for n in (1, 2, 3)]
    errored = suite.findall("testcase")[3]
    error = errored.find("error")
    assert error is not None and error.get("message") == "RunError: the model server did not start"
    assert _properties(errored)["trial"] == "1"
    suite_props = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
    # pass^3: flaky 2/3 and crashed 2/3 both give C(2,3) = 0
    assert (suite_props["k"], float(suite_props["pass_hat_k"])) == ("3", 0.0)


def test_junit_survives_control_characters() -> None:
    """ANSI colour codes and NUL in an error or a message do not make the XML unreadable; the words stay."""
    result = _result("noisy", [False, False])
    result.trials[0].mismatches = [Mismatch(where="answer", expected="ok", actual="no", message="\x1b[31mred\x00!")]
    result.trials[1].error = "RunError: \x1b[1mboom\x07"
    suite = ET.fromstring(junit_xml(_report(result, trials=2))).find("testsuite")
    assert suite is not None
    failure, error = suite.find("testcase/failure"), suite.find("testcase/error")
    assert failure is not None and error is not None
    assert "answer: [31mred!" in (failure.text or "")
    assert error.get("message") == "RunError: [1mboom"


# --- the JSON report and the baseline ----------------------------------------------------


def test_baseline_flags_worse_scenarios_and_not_new_ones(tmp_path: Path) -> None:
    """Against a stored report: a drop from 3/3 is newly failing, 2/3 to 1/3 dropped; a new scenario, a steady one and a better one are not worse."""
    before = _report(
        _result("steady", [True, True, True]),
        _result("broke", [True, True, True]),
        _result("slipped", [True, True, False]),
        _result("improved", [False, False, True]),
        trials=3,
    )
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(json_report(before, k=2, command=["mlops-supervisor", "eval"])), "utf-8")
    baseline = load_baseline(path)
    assert baseline == {"steady": (3, 3), "broke": (3, 3), "slipped": (2, 3), "improved": (1, 3)}

    after = _report(
        _result("steady", [True, True, True]),
        _result("broke", [True, False, True]),
        _result("slipped", [False, True, False]),
        _result("improved", [True, True, True]),
        _result("brand-new", [False, False, False]),
        trials=3,
    )
    worse = compare_to_baseline(after, baseline)
    assert [(r.id, r.kind, r.before, r.after) for r in worse] == [
        ("broke", "newly failing", (3, 3), (2, 3)),
        ("slipped", "pass rate dropped", (2, 3), (1, 3)),
    ]
    document = json_report(after, k=3, command=["mlops-supervisor", "eval", "--trials", "3"], regressions=worse)
    assert document["exit_code"] == 1
    assert [r["id"] for r in document["regressions"]] == ["broke", "slipped"]
    assert document["pass_hat_k"] == pytest.approx(2 / 5)  # steady and improved pass every trial


def test_json_report_holds_the_report_and_pass_hat_k() -> None:
    """The JSON report is the EvalReport as dumped, plus pass^k, each scenario's passes and n, and the command line."""
    report = _report(_result("a", [True, False]), _result("b", [True, True]), trials=2)
    document = json_report(report, k=1, command=["mlops-supervisor", "eval", "--k", "1"])
    assert document["command"] == ["mlops-supervisor", "eval", "--k", "1"]
    assert document["pass_hat_k"] == pytest.approx((0.5 + 1.0) / 2)
    assert [(r["id"], r["passes"], r["n"]) for r in document["results"]] == [("a", 1, 2), ("b", 2, 2)]
    assert document["results"][0]["trials"][1]["mismatches"][0]["where"] == "final_state.aliases.small-model.champion"
    assert json.loads(json.dumps(document)) == document


def test_a_pass_rate_below_the_threshold_exits_1() -> None:
    """`--min-pass-rate`: a pass^k below it is a missed threshold (exit 1) even when no blocker failed."""
    report = _report(_result("a", [True, False], severity="minor"), _result("b", [True, True]), trials=2)
    assert not report.blockers_failed
    below = json_report(report, k=2, command=["eval"], min_pass_hat_k=0.75)  # pass^2 = (0 + 1) / 2
    assert (below["pass_hat_k"], below["threshold_missed"], below["exit_code"]) == (0.5, True, 1)
    met = json_report(report, k=2, command=["eval"], min_pass_hat_k=0.5)
    assert (met["threshold_missed"], met["exit_code"]) == (False, 0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "is not JSON"),
        (json.dumps({"results": []}), "is not an eval report"),
        (json.dumps({"format": "mlops-supervisor-eval-report", "version": 99, "results": []}), "report version 99"),
    ],
)
def test_load_baseline_refuses_other_files(tmp_path: Path, content: str, message: str) -> None:
    """A baseline that is not one of our JSON reports is a usage error naming the file."""
    path = tmp_path / "other.json"
    path.write_text(content, "utf-8")
    with pytest.raises(UsageError, match=message) as raised:
        load_baseline(path)
    assert str(path) in str(raised.value)


# --- the command's bad input -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-dir/x.yaml"], "scenario path no-such-dir/x.yaml does not exist"),
        (["--trials", "0"], "--trials must be at least 1, got 0"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--trials", "2", "--k", "3"], "--k must be between 1 and --trials (2), got 3"),
        (["--baseline", "not-ours.json"], "is not an eval report"),
        (["--baseline", "absent.json"], "baseline absent.json does not exist"),
        (["--junit", "same.out", "--json", "same.out"], "--junit and --json both name same.out"),
        (["--junit", "not-ours.json/report.xml"], "not-ours.json is not a folder"),
        (["schema", "--trials", "3"], "`eval schema` takes no options"),
        (["--min-pass-rate", "1.5"], "--min-pass-rate must be between 0 and 1, got 1.5"),
    ],
)
def test_eval_bad_input_exits_2_writing_nothing(cli: CliRun, tmp_path: Path, args: list[str], message: str) -> None:
    """Each bad option is one clear line on stderr, exit 2, and neither report file is written."""
    (tmp_path / "not-ours.json").write_text(json.dumps({"tests": 3}), "utf-8")
    outputs = ["--junit", "out/junit.xml", "--json", "out/report.json"]
    done = cli("eval", *args, *(outputs if "--junit" not in args else []), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "same.out").exists()


def _status_scenario(scenario: str, expected_status: str) -> str:
    return (
        f"id: {scenario}\ndescription: status of an empty workspace\nguarantee: status answers\n"
        "severity: minor\nmodel: offline\nfixtures: {seed: empty}\n"
        f"turns: [{{ask: status, as: alice}}]\nexpect: {{status: {expected_status}}}\n"
    )


def test_eval_against_a_baseline_exits_1_when_a_scenario_got_worse(cli: CliRun, tmp_path: Path) -> None:
    """A minor scenario that passed in the baseline and fails now exits 1 and is named; a new failing one is not worse."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "status.yaml").write_text(_status_scenario("status-answers", "done"), "utf-8")
    first = cli("eval", str(suite), "--json", str(tmp_path / "base.json"), cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert load_baseline(tmp_path / "base.json") == {"status-answers": (1, 1)}

    (suite / "status.yaml").write_text(_status_scenario("status-answers", "refused"), "utf-8")
    (suite / "new.yaml").write_text(_status_scenario("brand-new", "refused"), "utf-8")
    junit = tmp_path / "reports" / "junit.xml"
    again = cli(
        "eval", str(suite), "--baseline", str(tmp_path / "base.json"), "--junit", str(junit), "--json", "-",
        cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    document = json.loads(again.stdout)
    assert document["blockers_failed"] == []
    assert document["regressions"] == [
        {"id": "status-answers", "kind": "newly failing", "before": [1, 1], "after": [0, 1]}
    ]
    assert "worse than the baseline: status-answers: newly failing (1/1 → 0/1)" in again.stderr
    assert 'expected: "refused"' in again.stderr
    suite_xml = _check_junit_shape(ET.parse(junit).getroot())
    assert (suite_xml.get("tests"), suite_xml.get("failures")) == ("2", "2")


def test_eval_schema_prints_the_scenario_schema(cli: CliRun) -> None:
    """`eval schema` prints the scenario format's JSON Schema, exactly what the format module builds."""
    from mlops_supervisor.evals._format import scenario_json_schema

    done = cli("eval", "schema")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(json.dumps(scenario_json_schema()))


# --- the pytest plugin -------------------------------------------------------------------

_SCENARIOS = """\
scenarios:
  - id: status-answers
    description: asking for the status of an empty workspace answers
    guarantee: status is a read anyone may make
    tags: [smoke]
    severity: minor
    model: offline
    fixtures: {seed: empty}
    turns:
      - ask: status
        as: alice
    expect: {status: done}
  - id: status-is-refused
    description: a wrong expectation, so the plugin's failure report can be read
    guarantee: nothing (this scenario is wrong on purpose)
    tags: [smoke, wrong]
    severity: blocker
    model: offline
    fixtures: {seed: empty}
    turns:
      - ask: status
        as: alice
    expect: {status: refused}
"""


def test_plugin_collects_eval_files_and_reports_mismatches(pytester: pytest.Pytester) -> None:
    """A *.eval.yaml beside a team's tests becomes one item per scenario; the failing one shows expected against actual."""
    pytester.makefile(".eval.yaml", checks=_SCENARIOS)
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(*_INNER, "-v", f"--junitxml={junit}", timeout=240)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*checks.eval.yaml::status-answers PASSED*", "*checks.eval.yaml::status-is-refused FAILED*"]
    )
    output = result.stdout.str()
    assert "status-is-refused (blocker): nothing (this scenario is wrong on purpose)" in output
    assert re.search(r'expected: "refused"\s*\n\s*actual:\s+"done"', output), output

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"test_plain", "status-answers", "status-is-refused"}
    assert _properties(cases["status-is-refused"])["severity"] == "blocker"
    assert cases["status-is-refused"].find("failure") is not None


def test_plugin_markers_and_trials(pytester: pytest.Pytester) -> None:
    """`-m blocker` selects by severity and `--mlops-eval-trials 2` makes an item per trial."""
    pytester.makefile(".eval.yaml", checks=_SCENARIOS)
    result = pytester.runpytest_subprocess(
        *_INNER, "--strict-markers", "--collect-only", "-q", "-m", "smoke", "--mlops-eval-trials", "2"
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "checks.eval.yaml::status-answers[[]trial-1[]]",
            "checks.eval.yaml::status-answers[[]trial-2[]]",
            "checks.eval.yaml::status-is-refused[[]trial-1[]]",
            "checks.eval.yaml::status-is-refused[[]trial-2[]]",
        ]
    )
    blockers = pytester.runpytest_subprocess(*_INNER, "--collect-only", "-q", "-m", "blocker")
    collected = [line for line in blockers.stdout.lines if "::" in line]
    assert collected == ["checks.eval.yaml::status-is-refused"]


def test_plugin_adds_nothing_without_eval_files(pytester: pytest.Pytester) -> None:
    """Plain YAML files and test modules collect exactly as without the plugin."""
    pytester.makefile(".yaml", config="scenarios: []\n")
    pytester.makefile(".yml", other="id: x\n")
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess(*_INNER, "--collect-only", "-q")
    assert [line for line in result.stdout.lines if "::" in line] == ["test_plain.py::test_plain"]


def test_plugin_collects_the_builtin_suite_only_when_asked(pytester: pytest.Pytester) -> None:
    """`--mlops-evals` adds one item per built-in scenario under mlops-evals::; without it, none."""
    from mlops_supervisor.evals._format import builtin_scenarios

    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    asked = pytester.runpytest_subprocess(*_INNER, "--collect-only", "-q", "--mlops-evals")
    assert asked.ret == 0, asked.stdout.str()
    expected = ["test_plain.py::test_plain", *(f"mlops-evals::{s.id}" for s in builtin_scenarios())]
    assert [line for line in asked.stdout.lines if "::" in line] == expected
    plain = pytester.runpytest_subprocess(*_INNER, "--collect-only", "-q")
    assert [line for line in plain.stdout.lines if "::" in line] == ["test_plain.py::test_plain"]
