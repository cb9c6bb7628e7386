"""Asking only for what is missing: a lifecycle request lists the inputs its stages lack, and records nothing."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from mlops_supervisor import Supervisor
from mlops_supervisor._requirements import (
    MissingInput,
    MissingInputsError,
    parse_lifecycle,
    with_answer,
)
from mlops_supervisor.policies import AuditLog
from mlops_supervisor.testing import KeyRing, install_policy
from tests.conftest import ADULT, EXAMPLE_SPEC, CliRun

# Everything a spec-less lifecycle through monitor needs, but the data source.
ANSWERS = {
    "target": "class",
    "task": "classification",
    "model": "income-model",
    "positive_class": ">50K",
    "sensitive_features": "sex",
    "use_case": "flag census records likely to earn over 50K",
    "sensitivity": "internal",
    "serving_target": "local",
    "latency_p95_ms": "200",
    "watch": "latency,errors,drift",
    "alert": "slack:#ml-alerts",
}


def _request(answers: dict[str, str], head: str = "lifecycle") -> str:
    request = head
    for key, value in answers.items():
        request = with_answer(request, key, value)
    return request


def _fingerprint(ws: Path) -> dict[str, str]:
    """Every file under ``ws`` with its content digest: what a refused request must leave as it was."""
    return {
        str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ws.rglob("*"))
        if p.is_file() and not p.name.startswith("mlops-supervisor.jsonl")
    }


def _slice_csv(tmp_path: Path, rows: int = 3000) -> Path:
    path = tmp_path / "adult-slice.csv"
    pd.read_parquet(ADULT).head(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def no_approvers(workspace: Path, keys: KeyRing) -> Path:
    """A workspace whose policy in force lists people (alice, admin) but no approver."""
    install_policy(workspace, keys.policy(people=["alice", "admin"]), admin="admin", keys=keys)
    return workspace


def _keys(missing: list[MissingInput]) -> list[str]:
    return [m.key for m in missing]


def test_a_spec_under_a_policy_without_approvers_lacks_only_the_approvers(no_approvers: Path) -> None:
    """The example spec gives everything else; the policy names nobody to approve production: one question."""
    with Supervisor(no_approvers, user="alice") as sup:
        missing = sup.missing_inputs(f"lifecycle {EXAMPLE_SPEC}")
        assert _keys(missing) == ["approvers"]
        assert "lists no approvers" in missing[0].question and "policy apply" in missing[0].question
        # through train nothing is missing: approvers are a deploy input
        assert sup.missing_inputs(f"lifecycle {EXAMPLE_SPEC} through train") == []
        assert sup.missing_inputs(f"lifecycle {EXAMPLE_SPEC}", stop_after="register") == []


def test_ask_exits_2_listing_the_missing_approvers_and_records_nothing(cli: CliRun, no_approvers: Path) -> None:
    """`ask "lifecycle SPEC"` exits 2 with the approvers question; no thread, audit line or file appears."""
    with Supervisor(no_approvers, user="alice") as sup:  # the workspace as any earlier command leaves it
        threads = sup.thread_ids()
    audit_lines = len(list(AuditLog(no_approvers / "audit.jsonl").records()))
    before = _fingerprint(no_approvers)

    human = cli("ask", f"lifecycle {EXAMPLE_SPEC}")
    assert human.returncode == 2, human.stderr
    assert human.stdout == ""
    lines = [line.strip() for line in human.stderr.strip().splitlines()]
    assert lines[0].startswith("error: the request needs 1 more input(s)")
    assert len(lines) == 2 and lines[1].startswith("approvers: Who approves production?")

    as_json = cli("ask", f"lifecycle {EXAMPLE_SPEC}", "--json")
    assert as_json.returncode == 2, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["status"] == "invalid_input"
    assert [m["key"] for m in payload["missing"]] == ["approvers"]
    assert set(payload["missing"][0]) == {"key", "question", "problem"}

    with Supervisor(no_approvers, user="alice") as sup:
        assert sup.thread_ids() == threads
        with pytest.raises(MissingInputsError) as caught:
            sup.ask(f"lifecycle {EXAMPLE_SPEC}")
        assert _keys(caught.value.missing) == ["approvers"]
        assert sup.thread_ids() == threads
    assert len(list(AuditLog(no_approvers / "audit.jsonl").records())) == audit_lines
    assert _fingerprint(no_approvers) == before
    # on a workspace that does not exist yet, the shipped policy lists no approver: nothing is created
    fresh = no_approvers.parent / "fresh"
    first = cli("ask", f"lifecycle {EXAMPLE_SPEC}", "--json", ws=fresh)
    assert first.returncode == 2 and [m["key"] for m in json.loads(first.stdout)["missing"]] == ["approvers"]
    assert not fresh.exists()


def test_a_request_without_data_lacks_only_the_data_source(
    cli: CliRun, workspace: Path, policy_file: Path, tmp_path: Path
) -> None:
    """Every answer but the data: exactly data_source is asked for; the CLI lists it and writes nothing."""
    request = _request(ANSWERS)
    with Supervisor(workspace, user="alice") as sup:
        missing = sup.missing_inputs(request)
        threads = sup.thread_ids()
    assert _keys(missing) == ["data_source"]
    assert missing[0].question == "Where is the data? (a CSV or Parquet path, or sklearn:NAME)"
    before = _fingerprint(workspace)
    done = cli("ask", request, "--json")
    assert done.returncode == 2, done.stderr
    assert json.loads(done.stdout) == {
        "status": "invalid_input",
        "missing": [{"key": "data_source", "question": missing[0].question, "problem": ""}],
    }
    assert _fingerprint(workspace) == before
    assert not (workspace / "specs").exists()

    # a path that does not exist is named, with what is allowed
    with Supervisor(workspace, user="alice") as sup:
        (bad,) = sup.missing_inputs(with_answer(request, "data_source", str(tmp_path / "nowhere.csv")))
        assert bad.key == "data_source" and "nowhere.csv does not exist" in bad.problem
        # the answer folded in completes the request
        assert sup.missing_inputs(with_answer(request, "data_source", str(_slice_csv(tmp_path)))) == []
        assert sup.thread_ids() == threads


def test_with_answer_quotes_and_replaces() -> None:
    """An answer with spaces or quotes survives the round trip; a second answer for a key replaces the first."""
    request = with_answer("lifecycle spec.yaml through train", "use_case", "score 'risky' loans; then rank")
    parsed = parse_lifecycle(request)
    assert parsed is not None
    assert parsed.spec == "spec.yaml" and parsed.through == "train"
    assert parsed.answers == {"use_case": "score 'risky' loans; then rank"}
    again = parse_lifecycle(with_answer(request, "use_case", "rank loans"))
    assert again is not None and again.answers == {"use_case": "rank loans"}
    assert again.spec == "spec.yaml" and again.through == "train"
    with pytest.raises(Exception, match="takes no 'colour'"):
        parse_lifecycle("lifecycle colour=blue")
    with pytest.raises(Exception, match="'colour' is not an input"):
        with_answer("lifecycle", "colour", "blue")


def test_an_approver_the_policy_does_not_list_is_refused(workspace: Path, policy_file: Path, tmp_path: Path) -> None:
    """Naming someone the policy does not list, or oneself, is refused with what is allowed and how to change it."""
    complete = _request({**ANSWERS, "data_source": str(_slice_csv(tmp_path))})
    with Supervisor(workspace, user="alice") as sup:
        assert sup.missing_inputs(with_answer(complete, "approvers", "release-manager")) == []
        (stranger,) = sup.missing_inputs(with_answer(complete, "approvers", "mallory"))
        assert stranger.key == "approvers"
        assert "mallory is not an approver in the policy in force" in stranger.problem
        assert "release-manager" in stranger.problem and "policy apply" in stranger.problem
        (self_approval,) = sup.missing_inputs(with_answer(complete, "approvers", "alice"))
        assert "alice is the requester and may not approve their own request" in self_approval.problem
        with pytest.raises(MissingInputsError, match="mallory is not an approver"):
            sup.ask(with_answer(complete, "approvers", "mallory"))
        (cluster,) = sup.missing_inputs(with_answer(complete, "serving_target", "kubernetes"))
        assert cluster.key == "serving_target" and "needs the cluster's details" in cluster.problem
        assert "serving.kubernetes" in cluster.problem
        (unknown,) = sup.missing_inputs(with_answer(complete, "serving_target", "mars"))
        assert unknown.key == "serving_target"
        assert unknown.problem == "serving target 'mars' is not one of local, kubernetes, kserve"
        assert sup.thread_ids() == []


def test_a_complete_request_writes_its_spec_runs_and_restates_the_objective(
    workspace: Path, policy_file: Path, tmp_path: Path
) -> None:
    """Through deploy: the spec is written from the answers, the stages run to the held production deploy, and
    the Plan restates the objective and acceptance criteria before the steps."""
    request = _request({**ANSWERS, "data_source": str(_slice_csv(tmp_path))}) + " through deploy"
    with Supervisor(workspace, user="alice") as sup:
        result = sup.ask(request)
    assert result.status == "awaiting_approval", result.report.summary
    assert result.pending_approval is not None and result.pending_approval.tool == "deploy_model"
    (spec_path,) = (workspace / "specs").glob("income-model-*.yaml")
    spec: dict[str, Any] = yaml.safe_load(spec_path.read_text("utf-8"))
    assert spec["data"]["source"] == str(tmp_path / "adult-slice.csv")
    assert spec["serving"] == {"target": "local", "latency_p95_ms": 200.0}
    assert [c["estimator"] for c in spec["training"]["candidates"]] == [
        "sklearn.linear_model.LogisticRegression",
        "sklearn.ensemble.HistGradientBoostingClassifier",
    ]
    plan = result.report.plan
    objective, steps = plan.split("**Steps**:")
    assert "**Objective**: flag census records likely to earn over 50K" in objective
    assert "a classification model `income-model` predicting `class`" in objective and "(internal data)" in objective
    assert f"`{spec_path}`" in objective and "LogisticRegression" in objective
    assert "roc_auc ≥ 0.75" in objective and "accuracy ≥ 0.7" in objective  # the policy's floors
    assert "demographic_parity_difference ≤ 0.25" in objective
    assert "canary 10 % → 50 % → 100 %" in objective
    assert "p95 latency goal 200 ms" in objective
    assert "approved by release-manager, signed, and not by the requester (alice)" in objective
    assert "monitoring" not in objective  # through deploy: no monitoring criteria
    assert steps.strip().startswith("1. **data**")
    assert [o.tool for o in result.outputs][-1] == "set_alias"


def test_openai_models_get_the_same_check(workspace: Path, policy_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is code, not a prompt: an openai: supervisor refuses the same request before any model call."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens: a call would fail
    with Supervisor(workspace, user="alice", model="openai:gpt-4o-mini") as sup:
        with pytest.raises(MissingInputsError) as caught:
            sup.ask(_request(ANSWERS))
        assert _keys(caught.value.missing) == ["data_source"]
        assert sup.thread_ids() == []


def _bare_spec(tmp_path: Path) -> Path:
    """A spec with no use case, sensitivity, serving or monitoring section, over a slice of Adult."""
    spec = {
        "name": "bare",
        "seed": 3,
        "data": {"source": str(_slice_csv(tmp_path)), "target": "class", "positive_class": ">50K"},
        "training": {
            "search": {"cv_folds": 2},
            "candidates": [
                {"name": "lr", "estimator": "sklearn.linear_model.LogisticRegression", "params": {"max_iter": 500}}
            ],
        },
        "model": {"name": "bare-model"},
    }
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(spec), "utf-8")
    return path


def test_run_to_train_needs_no_serving_while_run_to_deploy_lists_it(
    cli: CliRun, workspace: Path, policy_file: Path, tmp_path: Path
) -> None:
    """`run --stop-after train` on a bare spec runs; `run` through deploy or monitor exits 2 listing what it lacks."""
    spec = _bare_spec(tmp_path)
    before = _fingerprint(workspace)
    deploy = cli("run", str(spec), "--stop-after", "deploy", "--json")
    assert deploy.returncode == 2, deploy.stderr
    assert [m["key"] for m in json.loads(deploy.stdout)["missing"]] == [
        "use_case",
        "sensitivity",
        "serving_target",
        "latency_p95_ms",
    ]
    everything = cli("run", str(spec))
    assert everything.returncode == 2
    listed = [line.split(":")[0].strip() for line in everything.stderr.strip().splitlines()[1:]]
    assert listed == ["use_case", "sensitivity", "serving_target", "latency_p95_ms", "watch", "alert"]
    assert _fingerprint(workspace) == before

    train = cli("run", str(spec), "--stop-after", "train", "--json")
    assert train.returncode == 0, train.stderr[-2000:]
    payload = json.loads(train.stdout)
    assert payload["status"] == "done"
    assert [o["tool"] for o in payload["outputs"]][-1] == "train_model"
    assert "**Objective**: a classification model `bare-model`" in payload["report"]["plan"]


def test_spec_schema_shows_the_new_fields(cli: CliRun) -> None:
    """`spec schema` describes use_case, data.sensitivity, serving and monitoring with what each allows."""
    done = cli("spec", "schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    assert {"use_case", "serving", "monitoring"} <= set(schema["properties"])
    assert set(schema["required"]) == {"name", "data", "training", "model"}
    defs = schema["$defs"]

    def enum(prop: dict[str, Any]) -> list[str]:
        return next(option["enum"] for option in prop["anyOf"] if "enum" in option)

    assert enum(defs["DataSpec"]["properties"]["sensitivity"]) == ["public", "internal", "confidential", "restricted"]
    assert enum(defs["ServingSpec"]["properties"]["target"]) == ["local", "kubernetes", "kserve"]
    assert "latency" in defs["ServingSpec"]["properties"]["latency_p95_ms"]["description"]
    watch = defs["MonitoringSpec"]["properties"]["watch"]
    assert watch["items"]["enum"] == ["latency", "errors", "drift", "quality", "bias"]
    assert "slack:#CHANNEL" in defs["MonitoringSpec"]["properties"]["alert"]["description"]


def test_a_bad_alert_route_in_a_spec_is_named(tmp_path: Path) -> None:
    """A spec's monitoring.alert that is no route is refused by the schema, naming the allowed forms."""
    from mlops_supervisor.policies import InvalidInputError
    from mlops_supervisor.tools import load_spec

    doc = yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8"))
    doc["monitoring"]["alert"] = "pager me"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc), "utf-8")
    with pytest.raises(InvalidInputError, match=r"alert route 'pager me' is not one of: log, email:ADDRESS"):
        load_spec(path)
    assert shlex.split(with_answer("lifecycle", "alert", "log")) == ["lifecycle", "alert=log"]
