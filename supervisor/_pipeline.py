"""The pipeline playbook: which specialist runs which tool for each stage of a spec.

``preflight`` checks everything that can be checked without running anything (the spec,
the data file, the estimators and the size of the search against the policy), so a bad
spec is refused before a thread, a data set or an MLflow run exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_supervisor._state import STAGES
from mlops_supervisor.policies import InvalidInputError, Policy, UsageError
from mlops_supervisor.tools import LoadedSpec, load_spec

__all__ = ["playbook", "preflight"]


def preflight(spec_path: str | Path, policy: Policy) -> LoadedSpec:
    """The validated spec; ``InvalidInputError`` for anything wrong that needs no data to see."""
    from mlops_supervisor.tools._training import plan_search

    loaded = load_spec(spec_path)
    source = loaded.resolve_source()
    if not source.startswith("sklearn:") and not Path(source).is_file():
        raise InvalidInputError("data_not_found", f"data file {source} (data.source of {loaded.path}) does not exist")
    plan_search(loaded.spec, policy.training)
    return loaded


def playbook(loaded: LoadedSpec, stop_after: str) -> list[dict[str, Any]]:
    """The commands for every stage up to ``stop_after``, in order, one tool call each.

    Stages whose tools have not landed stop the pipeline with their 'not available yet' answer.
    """
    if stop_after not in STAGES:
        raise UsageError(f"unknown stage {stop_after!r}; allowed: {', '.join(STAGES)}")
    spec = {"spec": str(loaded.path)}
    model = loaded.spec.model.name
    by_stage: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
        "data": [
            ("data", "validate_dataset", spec),
            ("data", "scan_pii", spec),
            ("data", "version_dataset", spec),
            ("data", "split_dataset", spec),
        ],
        "train": [("experimentation", "train_model", spec)],
        "evaluate": [("evaluation", "evaluate_model", {"model": model, "version": 1})],
        "register": [("registry", "list_model_versions", {"model": model})],
        "deploy": [("deployment", "deploy_model", {"model": model, "version": 1})],
        "monitor": [("observability", "service_metrics", {"model": model})],
    }
    commands = []
    for stage in STAGES[: STAGES.index(stop_after) + 1]:
        for agent, tool, args in by_stage[stage]:
            commands.append(
                {"agent": agent, "tool": tool, "args": args, "text": f"call {tool} {json.dumps(args)}", "stage": stage}
            )
    return commands
