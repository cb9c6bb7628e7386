"""A pytest plugin: eval scenarios as test items, so teams mix them into their own suites.

Every ``*.eval.yaml`` under the test paths is collected, one item per scenario (per trial with
``--mlops-eval-trials N``); ``--mlops-evals`` adds the built-in suite. A failing scenario fails
with what it expected and what happened. Items carry markers for their severity and tags
(``-m blocker``, ``-m approvals``), and pytest's ``--junitxml`` records severity, tags and the
guarantee as properties. Without scenario files or the option, the plugin adds nothing.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import ExceptionInfo, TerminalRepr

    from mlops_supervisor.evals._format import Scenario
    from mlops_supervisor.evals._runner import TrialResult
    from mlops_supervisor.evals._seeds import SeedBank

__all__ = ["EvalItem", "ScenarioFile"]

SEVERITIES = ("blocker", "major", "minor")
# Tags that would change how pytest runs an item if they became markers of the same name.
_RESERVED_MARKERS = frozenset(
    {"skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings", "timeout", "tryfirst", "trylast"}
)


class EvalFailure(Exception):
    """A scenario trial that did not hold; its text is the readable mismatch report."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlops-evals", "mlops-supervisor agent evals")
    group.addoption("--mlops-evals", action="store_true", help="also collect the built-in eval suite")
    group.addoption(
        "--mlops-eval-trials", type=int, default=1, metavar="N", help="run each eval scenario N times (one item each)"
    )
    group.addoption(
        "--mlops-eval-model",
        default=None,
        metavar="SPEC",
        help="offline or openai:MODEL, for scenarios whose model is offline or live",
    )


def pytest_configure(config: pytest.Config) -> None:
    trials = config.getoption("mlops_eval_trials")
    if trials < 1:
        raise pytest.UsageError(f"--mlops-eval-trials must be at least 1, got {trials}")
    config.addinivalue_line("markers", "mlops_eval: an mlops-supervisor eval scenario")
    for severity in SEVERITIES:
        config.addinivalue_line("markers", f"{severity}: an eval scenario of severity {severity}")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.name.endswith((".eval.yaml", ".eval.yml")):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # First, so that -k, -m and deselection see the built-in items like any other.
    if config.getoption("mlops_evals"):
        suite = BuiltinSuite.from_parent(session, name="mlops-evals", nodeid="mlops-evals", path=session.path)
        items.extend(session.genitems(suite))


class _ScenarioCollector(pytest.Collector):
    """Items for a list of scenarios: one per scenario, or one per trial."""

    def scenarios(self) -> list[Scenario]:
        raise NotImplementedError

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        from mlops_supervisor.policies.errors import UsageError

        # A scenario file that does not validate: its one message (file, scenario, field), no traceback.
        if isinstance(excinfo.value, UsageError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def collect(self) -> Iterator[EvalItem]:
        trials = self.config.getoption("mlops_eval_trials")
        for scenario in self.scenarios():
            for trial in range(1, trials + 1):
                name = scenario.id if trials == 1 else f"{scenario.id}[trial-{trial}]"
                yield EvalItem.from_parent(self, name=name, scenario=scenario, trial=trial)


class ScenarioFile(_ScenarioCollector, pytest.File):
    """A ``*.eval.yaml`` file of one or several scenarios."""

    def scenarios(self) -> list[Scenario]:
        from mlops_supervisor.evals._format import load_scenario_file

        return load_scenario_file(self.path)


class BuiltinSuite(_ScenarioCollector):
    """The scenarios shipped with mlops-supervisor (``--mlops-evals``)."""

    def scenarios(self) -> list[Scenario]:
        from mlops_supervisor.evals._format import builtin_scenarios

        return builtin_scenarios()


class EvalItem(pytest.Item):
    """One trial of one scenario, run by the eval runner in a workspace of its own."""

    def __init__(self, *, scenario: Scenario, trial: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.trial = trial
        self.add_marker("mlops_eval")
        self.add_marker(scenario.severity)
        for tag in scenario.tags:
            if tag in _RESERVED_MARKERS:
                continue
            if not any(line.split(":")[0].strip() == tag for line in self.config.getini("markers")):
                self.config.addinivalue_line("markers", f"{tag}: eval scenarios tagged {tag}")
            self.add_marker(tag)
        self.user_properties += [
            ("severity", scenario.severity),
            ("tags", ",".join(scenario.tags)),
            ("guarantee", scenario.guarantee),
        ]

    def runtest(self) -> None:
        from mlops_supervisor.evals._report import failure_text

        result = _run_trial(self.scenario, self.trial, self.config)
        if not result.passed:
            raise EvalFailure(failure_text(result))

    def repr_failure(self, excinfo: ExceptionInfo[BaseException], style: Any = None) -> str | TerminalRepr:
        if isinstance(excinfo.value, EvalFailure):
            return f"{self.scenario.id} ({self.scenario.severity}): {self.scenario.guarantee}\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"eval {self.scenario.id} trial {self.trial}"


_BANK = pytest.StashKey["SeedBank"]()


def _bank(config: pytest.Config) -> SeedBank:
    """The session's seeds: built on first use, each once, then copied for every trial; gone at the end."""
    bank = config.stash.get(_BANK, None)
    if bank is None:
        from mlops_supervisor.evals._seeds import SeedBank

        folder = Path(tempfile.mkdtemp(prefix="mlops-eval-"))
        bank = config.stash[_BANK] = SeedBank(folder / "seeds")
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
        config.add_cleanup(bank.close)
    return bank


def _run_trial(scenario: Scenario, trial: int, config: pytest.Config) -> TrialResult:
    """Run one trial of ``scenario`` through the eval runner, on the session's seeds."""
    from mlops_supervisor.evals._runner import run_trial

    # The supervisor's libraries warn about their own deprecations; a team's `filterwarnings = error`
    # is for its code, and must not turn those into a failed scenario (the CLI hides them too).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_trial(scenario, trial, model=config.getoption("mlops_eval_model"), bank=_bank(config))
