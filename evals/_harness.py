"""The eval harness: scripted scenarios run against a real supervisor in a throwaway workspace.

A scenario is YAML (package data in ``evals/scenarios``): a policy, a model (``offline``,
an inline ``script``, or ``adversary`` for the allow-list attack generated from the
specialists' allow-lists), and steps (``ask``, ``approve``, ``reject``), each with the
identity it acts as and what must be observed.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops_supervisor._api import Supervisor
from mlops_supervisor._results import Report, RunResult
from mlops_supervisor.agents import SPECIALISTS
from mlops_supervisor.policies import UsageError, verify_audit_log
from mlops_supervisor.testing import KeyRing, adversarial_allow_list_script, install_policy

__all__ = ["EvalRun", "Scenario", "ScenarioOutcome", "load_scenarios", "run_scenario", "run_scenarios"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expectation(_Strict):
    """What a step must produce."""

    status: Literal["done", "refused", "awaiting_approval", "failed"] | None = None
    reason_codes: list[str] = Field(default_factory=list)
    all_denied: bool = False
    tool_runs: int | None = None


class Step(_Strict):
    """One action of a scenario, as one identity."""

    ask: str | None = None
    approve: bool = False
    reject: str | None = None
    as_: str = Field(alias="as")
    expect: Expectation = Expectation()

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        if sum([self.ask is not None, self.approve, self.reject is not None]) != 1:
            raise ValueError("each step does exactly one of: ask, approve, reject")
        return self


class Scenario(_Strict):
    """A named, self-checking eval."""

    name: str
    description: str
    model: Literal["offline", "adversary", "script"] = "offline"
    script: dict[str, list[dict[str, Any]]] | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    steps: list[Step]


class ScenarioOutcome(BaseModel):
    """Whether a scenario held, and the first broken expectation."""

    name: str
    passed: bool
    problems: list[str]
    thread_id: str | None


class EvalRun(BaseModel):
    """Every scenario's outcome; ``status`` is done only when all passed."""

    status: Literal["done", "failed"]
    thread_id: str | None = None
    scenarios: list[ScenarioOutcome]
    report: Report
    decisions: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every scenario passed, else 1."""
        return 0 if self.status == "done" else 1

    def to_markdown(self) -> str:
        """A table of scenarios."""
        rows = "\n".join(
            f"| {o.name} | {'pass' if o.passed else 'FAIL'} | {'; '.join(o.problems)} |" for o in self.scenarios
        )
        return f"| scenario | result | problems |\n|---|---|---|\n{rows}\n\n{self.report.summary}"


def load_scenarios() -> list[Scenario]:
    """The built-in scenarios, by file name order."""
    folder = resources.files("mlops_supervisor.evals.scenarios")
    scenarios = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            try:
                scenarios.append(Scenario.model_validate(yaml.safe_load(entry.read_text("utf-8"))))
            except ValidationError as exc:
                raise UsageError(f"eval scenario {entry.name} is invalid: {exc}") from None
    return scenarios


def _check(result: RunResult, expect: Expectation, tool_runs: int) -> list[str]:
    problems = []
    if expect.status is not None and result.status != expect.status:
        problems.append(f"status {result.status}, expected {expect.status}")
    codes = {d.reason_code for d in result.decisions}
    problems += [f"no decision with reason {code}" for code in expect.reason_codes if code not in codes]
    if expect.all_denied and (not result.decisions or any(d.decision != "deny" for d in result.decisions)):
        problems.append("not every proposed call was denied")
    if expect.tool_runs is not None and tool_runs != expect.tool_runs:
        problems.append(f"{tool_runs} tool bodies ran, expected {expect.tool_runs}")
    return problems


def run_scenario(scenario: Scenario, root: Path) -> ScenarioOutcome:
    """Run one scenario in a fresh workspace under ``root``."""
    workspace = root / scenario.name
    workspace.mkdir(parents=True, exist_ok=True)
    # Every person in the scenario is a key of its own (kept beside the workspace, never in it),
    # and the scenario's policy is installed as the workspace policy, signed like any other.
    keys = KeyRing(root / f"{scenario.name}-keys")
    people = [*scenario.policy.get("approvers", []), *(step.as_ for step in scenario.steps)]
    install_policy(
        workspace,
        {**scenario.policy, **keys.policy(approvers=scenario.policy.get("approvers", []), people=people)},
        admin=people[0],
        keys=keys,
    )
    model = "offline"
    if scenario.model != "offline":
        script = (
            scenario.script
            if scenario.model == "script"
            else adversarial_allow_list_script({name: spec.tools for name, spec in SPECIALISTS.items()})
        )
        script_path = workspace / "script.yaml"
        script_path.write_text(yaml.safe_dump(script), "utf-8")
        model = f"scripted:{script_path}"
    problems: list[str] = []
    thread_id: str | None = None
    for number, step in enumerate(scenario.steps, start=1):
        with Supervisor(workspace, model=model, user=step.as_, key=keys.path(step.as_)) as sup:
            if step.ask is not None:
                result = sup.ask(step.ask, thread_id=thread_id)
            elif step.approve:
                assert thread_id is not None, "approve needs an earlier ask"
                result = sup.approve(thread_id)
            else:
                assert thread_id is not None
                assert step.reject is not None
                result = sup.reject(thread_id, reason=step.reject)
            thread_id = result.thread_id
            runs = sum(
                1 for r in sup.audit.records() if r.get("event") == "tool_call" and r.get("thread_id") == thread_id
            )
        problems += [f"step {number}: {p}" for p in _check(result, step.expect, runs)]
    check = verify_audit_log(workspace / "audit.jsonl")
    if not check.ok:
        problems.append(f"audit chain broken at line {check.bad_line}: {check.problem}")
    return ScenarioOutcome(name=scenario.name, passed=not problems, problems=problems, thread_id=thread_id)


def run_scenarios(workspace: Path, *, only: list[str] | None = None) -> EvalRun:
    """Run the built-in scenarios (or ``only`` those named) in throwaway workspaces."""
    scenarios = load_scenarios()
    if only:
        names = {s.name for s in scenarios}
        unknown = sorted(set(only) - names)
        if unknown:
            raise UsageError(f"unknown scenario(s) {unknown}; allowed: {', '.join(sorted(names))}")
        scenarios = [s for s in scenarios if s.name in only]
    Path(workspace).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evals-", dir=workspace) as tmp:
        outcomes = [run_scenario(s, Path(tmp)) for s in scenarios]
    passed = sum(o.passed for o in outcomes)
    return EvalRun(
        status="done" if passed == len(outcomes) else "failed",
        scenarios=outcomes,
        report=Report(summary=f"{passed} of {len(outcomes)} scenarios passed."),
    )
