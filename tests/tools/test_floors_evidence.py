"""An evaluation carries the floors it passed; the gates compare them with the floors in force (a real MLflow store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops_supervisor.policies import (
    AuditLog,
    Decision,
    GateRefusedError,
    PatternRedactor,
    Policy,
    ReasonCode,
    load_policy,
)
from mlops_supervisor.policies.gates import evaluate_challenger_gate, evaluate_champion_gate
from mlops_supervisor.tools import ToolRegistry, build_tool_registry
from mlops_supervisor.tools.core import ToolContext, using_store
from mlops_supervisor.tools.registry import version_evidence
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
IN_FORCE = load_policy(None)
"""The policy in force: the shipped default (roc_auc 0.75, accuracy 0.7, both fairness limits 0.25)."""


def _context(workspace: Path, policy: Policy) -> ToolContext:
    # the pattern redactor finds PII quickly; Presidio's models are not what this file tests
    return ToolContext(
        workspace=workspace,
        audit=AuditLog(workspace / "audit.jsonl"),
        policy=policy,
        redactor=PatternRedactor(),
        pii_detector=lambda rules: PatternRedactor(),
    )


def _tools(workspace: Path, policy: Policy) -> ToolRegistry:
    """Every tool over ``workspace`` under ``policy``, called directly (through the chokepoint) by alice."""
    return build_tool_registry(_context(workspace, policy), actor="alice")


def _call(workspace: Path, policy: Policy, tool: str, **args: object) -> dict[str, Any]:
    answer: dict[str, Any] = json.loads(_tools(workspace, policy).get(tool).tool.invoke(args))
    return answer


@pytest.fixture(scope="module")
def weak(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """What a requester might pass as --policy: a low roc_auc floor, no accuracy floor, no fairness limits."""
    path = tmp_path_factory.mktemp("weak") / "policy.yaml"
    path.write_text(yaml.safe_dump({"evaluation": {"thresholds": {"roc_auc": 0.5}, "fairness": {}}}), "utf-8")
    return load_policy(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding version 1 of ``MODEL``, trained on a slice of Adult and registered, not yet evaluated."""
    root = tmp_path_factory.mktemp("floors")
    spec = str(small_spec(root, _adult_slice(), data__sensitive_features=["sex"]))
    ws = root / "ws"
    ws.mkdir()
    for stage in ("version_dataset", "split_dataset"):
        _call(ws, IN_FORCE, stage, spec=spec)
    run_id = _call(ws, IN_FORCE, "train_model", spec=spec)["best"]["run_id"]
    assert _call(ws, IN_FORCE, "register_model", model=MODEL, run_id=run_id)["version"] == 1
    return ws


def _client(ws: Path) -> MlflowClient:
    uri = _context(ws, IN_FORCE).store_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _gate_codes(ws: Path) -> tuple[ReasonCode, ReasonCode]:
    """The challenger and champion gates' answers for version 1 under the policy in force, over evidence read now."""
    with using_store(_context(ws, IN_FORCE).store_uri) as client:
        evidence = version_evidence(client, MODEL, 1)
    rules = IN_FORCE.evaluation
    return (
        evaluate_challenger_gate(evidence, rules=rules).reason_code,
        evaluate_champion_gate(evidence, rules=rules).reason_code,
    )


def test_an_evaluation_under_weaker_floors_does_not_pass_the_gates_in_force(workspace: Path, weak: Policy) -> None:
    """Evaluated under roc_auc 0.5 and no fairness limits: passed, yet the challenger and champion gates refuse it."""
    assert _call(workspace, weak, "evaluate_model", model=MODEL, version=1)["passed"] is True
    tags = _client(workspace).get_model_version(MODEL, "1").tags
    assert json.loads(tags["mlops.eval.thresholds"]) == {"roc_auc": 0.5}
    assert json.loads(tags["mlops.eval.fairness_limits"]) == {}
    assert tags["mlops.eval.task"] == "classification"
    assert tags["mlops.eval.policy_sha256"] == weak.digest
    assert _gate_codes(workspace) == (ReasonCode.EVALUATION_FLOORS_WEAKER, ReasonCode.EVALUATION_FLOORS_WEAKER)
    set_alias = _tools(workspace, IN_FORCE).get("set_alias")
    with pytest.raises(GateRefusedError) as refused:
        set_alias.tool.invoke({"model": MODEL, "version": 1, "alias": "challenger"})
    decision = refused.value.decision
    assert isinstance(decision, Decision)
    assert decision.reason_code is ReasonCode.EVALUATION_FLOORS_WEAKER
    assert "roc_auc floor 0.5, the one in force is 0.75" in decision.message
    assert "accuracy was not checked" in decision.message
    assert "equalized_odds_difference was not checked (the limit in force is 0.25)" in decision.message
    assert "Evaluate it again" in decision.message


def test_the_same_version_evaluated_under_the_policy_in_force_passes(workspace: Path) -> None:
    """Evaluated again under the floors in force, the same version passes both gates."""
    _call(workspace, IN_FORCE, "evaluate_model", model=MODEL, version=1)
    assert _gate_codes(workspace) == (ReasonCode.ALLOWED, ReasonCode.ALLOWED)
    with using_store(_context(workspace, IN_FORCE).store_uri) as client:
        evaluation = version_evidence(client, MODEL, 1).evaluation
    assert evaluation is not None and evaluation.consistent
    assert evaluation.thresholds == IN_FORCE.evaluation.thresholds
    assert evaluation.fairness_limits == IN_FORCE.evaluation.fairness
    assert (evaluation.task, evaluation.policy_digest) == ("classification", IN_FORCE.digest)


@pytest.mark.parametrize(
    ("tag", "value"),
    [
        ("mlops.eval.thresholds", json.dumps({"accuracy": 0.7, "roc_auc": 0.75})),
        ("mlops.eval.fairness_limits", json.dumps(IN_FORCE.evaluation.fairness, sort_keys=True)),
        ("mlops.eval.task", "regression"),
        ("mlops.eval.policy_sha256", IN_FORCE.digest),
        ("mlops.eval.thresholds", "not json"),
    ],
    ids=["thresholds", "fairness_limits", "task", "policy_sha256", "thresholds_not_json"],
)
def test_tags_edited_to_claim_the_floors_in_force_make_the_evidence_inconsistent(
    workspace: Path, weak: Policy, tag: str, value: str
) -> None:
    """A weak evaluation whose floor tags are edited to the floors in force disagrees with its report: refused."""
    _call(workspace, weak, "evaluate_model", model=MODEL, version=1)
    _client(workspace).set_model_version_tag(MODEL, "1", tag, value)
    assert _gate_codes(workspace) == (ReasonCode.EVIDENCE_INCONSISTENT, ReasonCode.EVIDENCE_INCONSISTENT)


def test_an_evaluation_without_recorded_floors_is_not_evidence(workspace: Path) -> None:
    """An evaluation from before floors were recorded (the tags absent) is refused as weaker, not taken on trust."""
    _call(workspace, IN_FORCE, "evaluate_model", model=MODEL, version=1)
    client = _client(workspace)
    for key in ("task", "thresholds", "fairness_limits", "policy_sha256"):
        client.delete_model_version_tag(MODEL, "1", f"mlops.eval.{key}")
    assert _gate_codes(workspace) == (ReasonCode.EVALUATION_FLOORS_WEAKER, ReasonCode.EVALUATION_FLOORS_WEAKER)
