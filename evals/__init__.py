"""Agent evals: scenarios in YAML, run through the real supervisor in seeded workspaces, checked against the real backends.

``load_scenario_file`` and ``builtin_scenarios`` read scenarios (``scenario_json_schema`` is their
format); ``run_eval`` runs them, ``trials`` times each, in ``workers`` processes, and returns an
``EvalReport`` (pass@k, pass^k, the blockers that failed); ``run_trial`` plays one trial.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlops_supervisor.evals._expect import Mismatch
    from mlops_supervisor.evals._format import (
        Expect,
        Fixtures,
        Scenario,
        Turn,
        builtin_scenarios,
        load_scenario_file,
        load_scenarios,
        scenario_json_schema,
    )
    from mlops_supervisor.evals._runner import EvalReport, ScenarioResult, TrialResult, run_eval, run_trial
    from mlops_supervisor.evals._seeds import SEEDS, SeedBank

# Imported on first use: the pytest plugin (evals/_plugin.py) loads this package on every pytest start,
# and the runner pulls in langgraph, MLflow and the model stack.
_LAZY = {
    "Mismatch": "_expect",
    **dict.fromkeys(
        (
            "Expect",
            "Fixtures",
            "Scenario",
            "Turn",
            "builtin_scenarios",
            "load_scenario_file",
            "load_scenarios",
            "scenario_json_schema",
        ),
        "_format",
    ),
    **dict.fromkeys(("EvalReport", "ScenarioResult", "TrialResult", "run_eval", "run_trial"), "_runner"),
    **dict.fromkeys(("SEEDS", "SeedBank"), "_seeds"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"mlops_supervisor.evals.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mlops_supervisor.evals' has no attribute {name!r}")


__all__ = [
    "SEEDS",
    "EvalReport",
    "Expect",
    "Fixtures",
    "Mismatch",
    "Scenario",
    "ScenarioResult",
    "SeedBank",
    "TrialResult",
    "Turn",
    "builtin_scenarios",
    "load_scenario_file",
    "load_scenarios",
    "run_eval",
    "run_trial",
    "scenario_json_schema",
]
