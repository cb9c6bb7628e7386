"""The pipeline playbook: which specialist runs which tool for each stage of a spec.

``preflight`` checks everything that can be checked without running anything (the spec,
the data file, the estimators and the size of the search against the policy, the canary
plan against the policy's canary minimums), so a bad spec is refused before a thread, a
data set or an MLflow run exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_supervisor._state import STAGES
from mlops_supervisor.policies import InvalidInputError, Policy, UsageError
from mlops_supervisor.tools import LoadedSpec, load_spec

__all__ = ["playbook", "preflight", "resolve_refs"]


def preflight(spec_path: str | Path, policy: Policy) -> LoadedSpec:
    """The validated spec; ``InvalidInputError`` for anything wrong that needs no data to see."""
    from mlops_supervisor.tools.serving import check_deployment
    from mlops_supervisor.tools.training import plan_search

    loaded = load_spec(spec_path)
    source = loaded.resolve_source()
    if not source.startswith("sklearn:") and not Path(source).is_file():
        raise InvalidInputError("data_not_found", f"data file {source} (data.source of {loaded.path}) does not exist")
    plan_search(loaded.spec, policy.training)
    below = check_deployment(loaded.spec.deployment, policy.canary)
    if below:
        raise InvalidInputError(
            "canary_below_policy",
            f"pipeline spec {loaded.path} asks for less than the policy's canary minimums: " + "; ".join(below),
        )
    return loaded


def playbook(loaded: LoadedSpec, stop_after: str, *, objective: list[str] | None = None) -> list[dict[str, Any]]:
    """The commands for every stage up to ``stop_after``, in order, one tool call each.

    ``objective`` (the Plan's restatement of the objective and acceptance criteria, already
    redacted) rides on the first command, where the report finds it.

    The evaluate stage registers the best candidate (a version is what gets evaluated) and
    evaluates it; the register stage points ``challenger`` at it. Arguments written as
    ``{"$ref": "TOOL.FIELD..."}`` take their value from that tool's latest output when the
    step is routed. Stages whose tools have not landed stop with 'not available yet'.
    """
    if stop_after not in STAGES:
        raise UsageError(f"unknown stage {stop_after!r}; allowed: {', '.join(STAGES)}")
    spec = {"spec": str(loaded.path)}
    model = loaded.spec.model.name
    # Filled in when the step is routed, from what an earlier step returned (see resolve_refs).
    version = {"$ref": "register_model.version"}
    by_stage: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
        "data": [
            ("data", "validate_dataset", spec),
            ("data", "scan_pii", spec),
            ("data", "version_dataset", spec),
            ("data", "split_dataset", spec),
        ],
        "train": [("experimentation", "train_model", spec)],
        "evaluate": [
            ("registry", "register_model", {"model": model, "run_id": {"$ref": "train_model.best.run_id"}}),
            ("evaluation", "evaluate_model", {"model": model, "version": version}),
        ],
        "register": [("registry", "set_alias", {"model": model, "version": version, "alias": "challenger"})],
        "deploy": [("deployment", "deploy_model", {"model": model, "version": version})],
        "monitor": [
            ("observability", "service_metrics", {"model": model}),
            ("observability", "drift_report", {"model": model}),
        ],
    }
    commands = []
    for stage in STAGES[: STAGES.index(stop_after) + 1]:
        for agent, tool, args in by_stage[stage]:
            commands.append(
                {"agent": agent, "tool": tool, "args": args, "text": f"call {tool} {json.dumps(args)}", "stage": stage}
            )
    if objective and commands:
        commands[0]["objective"] = list(objective)
    return commands


def resolve_refs(args: dict[str, Any], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """``args`` with each ``{"$ref": "TOOL.FIELD..."}`` replaced from TOOL's latest JSON output.

    ``UsageError`` names a reference that no earlier output can fill.
    """
    resolved = {}
    for key, value in args.items():
        if not (isinstance(value, dict) and set(value) == {"$ref"}):
            resolved[key] = value
            continue
        tool, *path = str(value["$ref"]).split(".")
        found: Any = None
        for result in reversed(outputs):
            if result["tool"] == tool and result["outcome"] == "ok":
                try:
                    found = json.loads(result.get("output", ""))
                except ValueError:
                    found = None
                break
        for part in path:
            found = found.get(part) if isinstance(found, dict) else None
        if found is None:
            raise UsageError(f"pipeline step needs {value['$ref']}, which no earlier step returned")
        resolved[key] = found
    return resolved
