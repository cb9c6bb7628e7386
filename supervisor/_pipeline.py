"""The pipeline playbook: which specialist runs which tool for each stage of a spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mlops_supervisor._state import STAGES
from mlops_supervisor.policies import UsageError

__all__ = ["playbook"]


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"pipeline spec {path} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise UsageError(f"pipeline spec {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"pipeline spec {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"pipeline spec {path} must be a YAML mapping")
    return data


def playbook(spec_path: Path, stop_after: str) -> list[dict[str, Any]]:
    """The commands for every stage up to ``stop_after``, in order.

    Each stage is one tool call by its specialist; stages whose tools have not landed
    stop the pipeline with their 'not available yet' answer.
    """
    if stop_after not in STAGES:
        raise UsageError(f"unknown stage {stop_after!r}; allowed: {', '.join(STAGES)}")
    spec = _load_spec(spec_path)
    data = spec.get("data")
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, str) or not source:
        raise UsageError(f"pipeline spec {spec_path} needs data.source (a CSV or Parquet path, or sklearn:NAME)")
    model = spec.get("model", {}).get("name", "model") if isinstance(spec.get("model"), dict) else "model"
    by_stage: dict[str, dict[str, Any]] = {
        "data": {"agent": "data", "tool": "load_dataset", "args": {"source": source}},
        "train": {"agent": "experimentation", "tool": "train_model", "args": {"spec": str(spec_path)}},
        "evaluate": {"agent": "evaluation", "tool": "evaluate_model", "args": {"model": model, "version": 1}},
        "register": {"agent": "registry", "tool": "list_model_versions", "args": {"model": model}},
        "deploy": {"agent": "deployment", "tool": "deploy_model", "args": {"model": model, "version": 1}},
        "monitor": {"agent": "observability", "tool": "service_metrics", "args": {"model": model}},
    }
    commands = []
    for stage in STAGES[: STAGES.index(stop_after) + 1]:
        step = by_stage[stage]
        commands.append({**step, "text": f"call {step['tool']} {json.dumps(step['args'])}", "stage": stage})
    return commands
