"""The eval harness and the built-in scenarios (scripted, offline, self-checking)."""

from mlops_supervisor.evals._harness import (
    EvalRun,
    Scenario,
    ScenarioOutcome,
    load_scenarios,
    run_scenario,
    run_scenarios,
)

__all__ = ["EvalRun", "Scenario", "ScenarioOutcome", "load_scenarios", "run_scenario", "run_scenarios"]
