"""Evaluation, registry and promotion gates on a real MLflow store, with approvals across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import (
    GateRefusedError,
    InvalidInputError,
    UsageError,
    request_statement,
    sign_statement,
)
from mlops_supervisor.policies.gates import evidence_digest
from mlops_supervisor.policies.identity import load_private_key
from mlops_supervisor.testing import KeyRing, install_policy
from mlops_supervisor.tools.registry import version_evidence
from tests.conftest import CLI, CliRun, champion_of, store_client
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"


def _client(ws: Path) -> Any:
    return store_client(ws)


def _champion(ws: Path) -> int | None:
    return champion_of(ws, MODEL)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose pipeline ran to `register` (version 1, challenger), plus version 2 evaluated."""
    root = tmp_path_factory.mktemp("gates")
    ws = root / "ws"
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"])
    with Supervisor(ws, user="alice") as sup:
        result = sup.run_pipeline(spec, stop_after="register")
        assert result.status == "done", result.report.summary
        run_id = next(o.output for o in result.outputs if o.tool == "train_model")["best"]["run_id"]
        # a library user registering and evaluating a second version from the same run
        assert (
            json.loads(sup.tools.get("register_model").tool.invoke({"model": MODEL, "run_id": run_id}))["version"] == 2
        )
        assert json.loads(sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": 2}))["passed"]
    return ws


@pytest.fixture
def ws(base: Path, tmp_path: Path, keys: KeyRing) -> Path:
    """A private copy of ``base`` whose installed policy names carol as the approver; alice may request."""
    copy = tmp_path / "ws"
    shutil.copytree(base, copy)
    install_policy(copy, keys.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=keys)
    return copy


def _sup(ws: Path, user: str, **kw: Any) -> Supervisor:
    return Supervisor(ws, user=user, **kw)


def test_register_stage_leaves_evidence_tags_evaluation_run_and_challenger(base: Path) -> None:
    """Version 1 carries lineage and evaluation evidence; its evaluation run holds report and plots; it is challenger."""
    client = _client(base)
    version = client.get_model_version(MODEL, "1")
    tags = version.tags
    assert {
        "mlops.training.run_id",
        "mlops.data.digest",
        "mlops.code.git_commit",
        "mlops.eval.run_id",
        "mlops.eval.report_digest",
        "mlops.eval.at",
        "mlops.eval.metric.roc_auc",
    } <= set(tags)
    assert tags["mlops.eval.passed"] == "true"
    assert client.get_registered_model(MODEL).aliases == {"challenger": 1}
    evaluation = tags["mlops.eval.run_id"]
    artifacts = {a.path for a in client.list_artifacts(evaluation, "evaluation")}
    assert {"evaluation/report.json", "evaluation/report.md", "evaluation/plots"} <= artifacts
    plots = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(evaluation, "evaluation/plots")}
    assert plots == {"roc.png", "confusion_matrix.png", "calibration.png", "groups_sex.png"}
    report = json.loads(
        Path(client.download_artifacts(evaluation, "evaluation/report.json", str(base.parent))).read_text("utf-8")
    )
    assert set(report["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier_score"}
    assert set(report["fairness"]["sex"]["checks"]) == {"demographic_parity_difference", "equalized_odds_difference"}
    assert client.get_run(evaluation).data.metrics["test_roc_auc"] == report["metrics"]["roc_auc"]


def test_promotion_pauses_refuses_the_requester_and_a_listed_approver_finishes_it(cli: CliRun, ws: Path) -> None:
    """ask → exit 4; approve by the requester → exit 3; approve by carol → exit 0, champion set, approval tagged."""
    asked = cli("ask", f"promote {MODEL} version 1 to production", "--json", user="alice", ws=ws)
    assert asked.returncode == 4, asked.stdout + asked.stderr
    thread = json.loads(asked.stdout)["thread_id"]
    shown = cli("status", thread, user="carol", ws=ws)
    assert shown.returncode == 4 and "Approval needed" in shown.stdout, shown.stdout + shown.stderr
    assert "may approve: carol" in shown.stdout and "roc_auc" in shown.stdout
    own = cli("approve", thread, "--json", user="alice", ws=ws)
    assert own.returncode == 3
    assert "self_approval" in {d["reason_code"] for d in json.loads(own.stdout)["decisions"]}
    assert _champion(ws) is None
    done = cli("approve", thread, "--reason", "evidence reviewed", "--json", user="carol", ws=ws)
    assert done.returncode == 0, done.stdout
    assert _champion(ws) == 1
    tags = _client(ws).get_model_version(MODEL, "1").tags
    assert (tags["mlops.approval.approver"], tags["mlops.approval.requester"]) == ("carol", "alice")
    approvals = [
        json.loads(line)
        for line in (ws / "audit.jsonl").read_text().splitlines()
        if '"event": "approval"' in line or '"event":"approval"' in line
    ]
    assert approvals[-1]["evidence_digest"] == tags["mlops.approval.evidence_digest"]


def _ask_promotion(ws: Path, version: int) -> str:
    with _sup(ws, "alice") as sup:
        held = sup.ask(f"promote {MODEL} version {version} to production")
    assert held.status == "awaiting_approval", held.report.summary
    return held.thread_id


def _codes(result: Any) -> set[str]:
    return {d.reason_code for d in result.decisions if d.decision == "deny"}


def test_an_expired_approval_is_refused(ws: Path) -> None:
    """An approval given after the request's time to live has passed does not promote."""
    thread = _ask_promotion(ws, 1)
    later = datetime.now(UTC) + timedelta(days=2)
    with _sup(ws, "carol", clock=lambda: later) as sup:
        result = sup.approve(thread)
    assert result.status == "refused"
    assert "approval_expired" in _codes(result)
    assert _champion(ws) is None


def test_the_approver_is_shown_the_evidence_they_sign_off_on(ws: Path) -> None:
    """The paused thread's evidence view: version, action, metrics against thresholds, fairness, canary,
    the champion diff and the digest the approval is bound to; an edited tag shows as inconsistent."""
    first = _ask_promotion(ws, 1)
    with _sup(ws, "alice") as sup:
        view = sup.approval_evidence(first)
        pending = sup.status(first).pending_approval  # type: ignore[union-attr]
    report = json.loads(
        Path(
            _client(ws).download_artifacts(
                _client(ws).get_model_version(MODEL, "1").tags["mlops.eval.run_id"], "evaluation/report.json", str(ws)
            )
        ).read_text("utf-8")
    )
    assert (view.model, view.version, view.action, view.requester) == (MODEL, 1, "champion", "alice")
    assert view.approvers == ["carol"]
    assert pending is not None and view.evidence_digest and view.consistent is True
    roc = next(m for m in view.metrics if m.name == "roc_auc")
    assert (roc.value, roc.threshold, roc.passed) == (
        report["metrics"]["roc_auc"],
        report["thresholds"]["roc_auc"],
        True,
    )
    assert {(f.feature, f.metric) for f in view.fairness} == {
        ("sex", "demographic_parity_difference"),
        ("sex", "equalized_odds_difference"),
    }
    assert view.champion is None and view.canary == "not run: a first production deploy has no canary"
    text = view.to_markdown()
    assert f"| roc_auc | {roc.value:.4f} | {roc.threshold:g} | pass |" in text
    assert view.evidence_digest[:16] in text and "**carol**" in text
    with _sup(ws, "carol") as sup:
        assert sup.approve(first).status == "done"
    second = _ask_promotion(ws, 2)
    _client(ws).set_model_version_tag(MODEL, "2", "mlops.eval.metric.roc_auc", "0.999")
    with _sup(ws, "alice") as sup:
        view = sup.approval_evidence(second)
        with pytest.raises(UsageError, match="not awaiting approval"):
            sup.approval_evidence(first)
    assert view.champion is not None and view.champion.version == 1
    assert view.champion.metrics["roc_auc"][1] == 0.999
    assert view.consistent is False and "disagree" in view.to_markdown()


def test_an_edited_metric_tag_voids_the_approval(ws: Path) -> None:
    """Editing an evidence tag after the request makes the evidence inconsistent: the approval promotes nothing."""
    thread = _ask_promotion(ws, 1)
    _client(ws).set_model_version_tag(MODEL, "1", "mlops.eval.metric.roc_auc", "0.999")
    with _sup(ws, "carol") as sup:
        result = sup.approve(thread)
    assert result.status == "refused"
    assert _codes(result) & {"evidence_inconsistent", "approval_evidence_changed"}
    assert _champion(ws) is None


def test_a_new_evaluation_voids_the_approval(ws: Path) -> None:
    """A fresh evaluation after the request changes the evidence digest: approval_evidence_changed."""
    thread = _ask_promotion(ws, 1)
    with _sup(ws, "bob") as sup:
        sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": 1})
    with _sup(ws, "carol") as sup:
        result = sup.approve(thread)
    assert result.status == "refused"
    assert "approval_evidence_changed" in _codes(result)
    assert _champion(ws) is None


def test_library_calls_cannot_set_champion_without_evidence_and_approval(ws: Path) -> None:
    """Direct tool calls meet the same gates: no approval, no evaluation, no finished training run: refused."""
    with _sup(ws, "alice") as sup:
        tools = sup.tools
        with pytest.raises(GateRefusedError) as caught:
            tools.get("set_alias").tool.invoke({"model": MODEL, "version": 1, "alias": "champion"})
        assert caught.value.decision.reason_code.value == "approval_missing"
        with pytest.raises(GateRefusedError) as caught:
            tools.get("promote_model").tool.invoke({"model": MODEL, "version": 2})
        assert caught.value.decision.reason_code.value == "approval_missing"
        run_id = _client(ws).get_model_version(MODEL, "1").tags["mlops.training.run_id"]
        v3 = json.loads(tools.get("register_model").tool.invoke({"model": MODEL, "run_id": run_id}))["version"]
        for tool, args in (("set_alias", {"alias": "challenger"}), ("promote_model", {})):
            with pytest.raises(GateRefusedError) as caught:
                tools.get(tool).tool.invoke({"model": MODEL, "version": v3, **args})
            assert caught.value.decision.reason_code.value == "evaluation_missing"
        evaluation_run = _client(ws).get_model_version(MODEL, "1").tags["mlops.eval.run_id"]
        with pytest.raises(GateRefusedError) as caught:
            tools.get("register_model").tool.invoke({"model": MODEL, "run_id": evaluation_run})
        assert caught.value.decision.reason_code.value == "training_run_incomplete"
    assert _champion(ws) is None
    assert _client(ws).get_registered_model(MODEL).aliases == {"challenger": 1}


def test_an_approval_of_one_version_does_not_promote_another(ws: Path) -> None:
    """Version 1 promoted with its approval; version 2 still needs its own."""
    thread = _ask_promotion(ws, 1)
    with _sup(ws, "carol") as sup:
        assert sup.approve(thread).status == "done"
    with _sup(ws, "alice") as sup:
        with pytest.raises(GateRefusedError) as caught:
            sup.tools.get("promote_model").tool.invoke({"model": MODEL, "version": 2})
        # with a champion in place, a new evaluation also compares against it on the same rows
        again = json.loads(sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": 2}))
    assert caught.value.decision.reason_code.value == "approval_missing"
    assert _champion(ws) == 1
    assert again["champion"]["version"] == 1 and again["champion"]["passed"] is True
    assert again["champion"]["challenger"] == again["champion"]["champion"]  # the same model, scored twice


def test_an_audit_line_is_not_an_approval(ws: Path, keys: KeyRing) -> None:
    """Approval lines appended through the public audit API, unsigned or signed with the requester's key in the
    approver's name, promote nothing: the approval is the approver's signature, not the line."""
    client = _client(ws)
    digest = evidence_digest(version_evidence(client, MODEL, 1))
    expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    line = {
        "decision": "allow",
        "approval_action": "champion",
        "model": MODEL,
        "version": 1,
        "evidence_digest": digest,
        "requester": "alice",
        "approver": "carol",
        "expires_at": expires,
    }
    alices_key = load_private_key(keys.path("alice"))
    request = sign_statement(
        alices_key,
        "alice",
        request_statement(thread_id="t-forged", requester="alice", request="promote", at=datetime.now(UTC)),
    )
    statement = {
        "kind": "approval",
        "decision": "approve",
        "approver": "carol",
        "requester": "alice",
        "thread": "t-forged",
        "tool": "promote_model",
        "binding": "0" * 64,
        "action": "champion",
        "model": MODEL,
        "version": 1,
        "evidence_digest": digest,
        "expires_at": expires,
        "request_signature": request.signature,
    }
    in_carols_name = sign_statement(alices_key, "carol", statement)
    forgeries = [
        line,
        {**line, "request_signed": request.model_dump(), "approval_signed": in_carols_name.model_dump()},
    ]
    with _sup(ws, "alice") as sup:
        for forged in forgeries:
            sup.audit.append("approval", **forged)
            with pytest.raises((GateRefusedError, InvalidInputError)) as caught:
                sup.tools.get("promote_model").tool.invoke({"model": MODEL, "version": 1})
            refusal = caught.value
            code = (
                refusal.decision.reason_code.value
                if isinstance(refusal, GateRefusedError)
                else getattr(refusal, "reason_code", "")
            )
            assert code == "signature_invalid", refusal
    assert _champion(ws) is None
    # the same statement signed with carol's own key is an approval: the signature is what counts
    signed_by_carol = sign_statement(load_private_key(keys.path("carol")), "carol", statement)
    with _sup(ws, "alice") as sup:
        sup.audit.append(
            "approval", **line, request_signed=request.model_dump(), approval_signed=signed_by_carol.model_dump()
        )
        sup.tools.get("promote_model").tool.invoke({"model": MODEL, "version": 1})
    assert _champion(ws) == 1


def test_two_concurrent_promotions_exactly_one_wins(ws: Path) -> None:
    """Two approved promotions race in two processes: one sets champion, the other is refused; champion passed."""
    threads = {version: _ask_promotion(ws, version) for version in (1, 2)}
    env = {**os.environ, "COLUMNS": "200"}
    procs = {
        version: subprocess.Popen(
            [CLI, "--workspace", str(ws), "--as", "carol", "approve", thread, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for version, thread in threads.items()
    }
    outcomes = {version: (p.wait(timeout=180), json.loads(p.communicate()[0])) for version, p in procs.items()}
    codes = sorted(code for code, _ in outcomes.values())
    assert codes == [0, 3], outcomes
    (winner,) = [v for v, (code, _) in outcomes.items() if code == 0]
    (loser,) = [v for v, (code, _) in outcomes.items() if code == 3]
    assert "approval_evidence_changed" in {d["reason_code"] for d in outcomes[loser][1]["decisions"]}
    assert _champion(ws) == winner
    assert _client(ws).get_model_version(MODEL, str(winner)).tags["mlops.eval.passed"] == "true"


def test_unmeetable_thresholds_stop_at_the_evaluation_gate(cli: CliRun, workspace: Path, tmp_path: Path) -> None:
    """A spec asking roc_auc ≥ 0.99 stops at evaluation: exit 3, reason evaluation_failed, no alias anywhere."""
    spec = small_spec(
        tmp_path, _adult_slice(), data__sensitive_features=["sex"], evaluation={"thresholds": {"roc_auc": 0.99}}
    )
    done = cli("run", str(spec), "--stop-after", "register", "--json")
    payload = json.loads(done.stdout)
    assert done.returncode == 3, payload["report"]["summary"]
    assert "evaluation_failed" in {d["reason_code"] for d in payload["decisions"] if d["decision"] == "deny"}
    assert "roc_auc" in payload["report"]["summary"] and "0.99" in payload["report"]["summary"]
    assert "set_alias" not in {o["tool"] for o in payload["outputs"]}
    client = _client(workspace)
    assert client.get_registered_model(MODEL).aliases == {}
    version = client.get_model_version(MODEL, "1")
    assert version.tags["mlops.eval.passed"] == "false"
