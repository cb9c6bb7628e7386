"""Evidence read from MLflow and the audit log, as the typed records the gates take.

Nothing here trusts what a caller or an LLM says: a version's evaluation is read from its
tags *and* checked against the report artifact of the evaluation run those tags name, and
an approval is read from the hash-chained audit log, whose chain must verify.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mlops_supervisor.policies import AuditStore, InvalidInputError, Policy, RunError, Signed
from mlops_supervisor.policies.gates import ApprovalRecord, EvaluationEvidence, TrainingEvidence, VersionEvidence
from mlops_supervisor.policies.identity import verify_statement
from mlops_supervisor.tools._spec import PipelineSpec

__all__ = [
    "CHAMPION_ACTION",
    "aliased_version",
    "approval_record",
    "evaluation_report",
    "model_version",
    "report_digest",
    "training_evidence",
    "training_spec",
    "version_evidence",
]

CHAMPION_ACTION = "champion"
"""The action an approval names when it lets a version become ``champion`` (promote or set_alias)."""


def report_digest(report: dict[str, Any]) -> str:
    """sha256 of an evaluation report's canonical JSON."""
    return hashlib.sha256(json.dumps(report, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def training_evidence(client: Any, run_id: str) -> TrainingEvidence:
    """What the run ``run_id`` holds; ``InvalidInputError`` when there is no such run."""
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # re-raised below unless the store said "no such run"
        if not _store_answered_no(exc):
            raise _unreadable(f"MLflow run {run_id!r}", exc) from exc
        raise InvalidInputError("unknown_run", f"there is no MLflow run {run_id!r} in this store") from None
    tags = run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    outputs = run.outputs.model_outputs if run.outputs is not None else []
    return TrainingEvidence(
        run_id=run_id,
        status=run.info.status,
        role=tags.get("mlops.role"),
        data_digest=tags.get("mlops.data.digest"),
        code_version=tags.get("mlops.code.git_commit"),
        params=len(run.data.params),
        environment="environment.json" in artifacts,
        model_id=outputs[0].model_id if outputs else None,
    )


def training_spec(client: Any, run_id: str) -> PipelineSpec:
    """The pipeline spec a training run logged (``spec.yaml``): what its evaluation and deployment follow."""
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run_id, "spec.yaml", tmp)).read_text("utf-8")
    return PipelineSpec.model_validate(yaml.safe_load(text))


def trained_from(client: Any, found: Any) -> PipelineSpec | None:
    """The spec the model version ``found`` was trained from (its training run's ``spec.yaml``); None without one."""
    run_id = found.tags.get("mlops.training.run_id")
    return training_spec(client, run_id) if run_id else None


def model_version(client: Any, model: str, version: int) -> Any:
    """``model`` ``version`` as MLflow holds it; ``InvalidInputError`` (``unknown_model_version``) when there is none."""
    try:
        return client.get_model_version(model, str(version))
    except Exception as exc:  # re-raised below unless the store said "no such version"
        if not _store_answered_no(exc):
            raise _unreadable(f"registered model {model!r} version {version}", exc) from exc
        raise InvalidInputError(
            "unknown_model_version", f"there is no registered model {model!r} version {version}"
        ) from None


def _evaluation(client: Any, model: str, version: int, tags: dict[str, str]) -> EvaluationEvidence | None:
    run_id = tags.get("mlops.eval.run_id")
    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "evaluation/report.json", tmp)
            report = json.loads(Path(path).read_text("utf-8"))
        except Exception:  # noqa: BLE001 - a missing or unreadable report is inconsistent evidence
            report = None
    consistent = report is not None and tags.get("mlops.eval.report_digest") == report_digest(report)
    metrics = {
        k.removeprefix("mlops.eval.metric."): float(v) for k, v in tags.items() if k.startswith("mlops.eval.metric.")
    }
    # The floors it applied, named as in the report. A missing tag leaves its field None (an older
    # evaluation, or one stripped of them), which the gates refuse; an edited one disagrees with the report.
    floors: dict[str, Any] = {}
    for key in ("task", "thresholds", "fairness_limits", "policy_sha256"):
        raw = tags.get(f"mlops.eval.{key}")
        if raw is None:
            continue
        try:
            floors[key] = raw if key in {"task", "policy_sha256"} else {k: float(v) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, AttributeError):  # not a JSON object of numbers: not what evaluate wrote
            consistent = False
    if report is not None:
        consistent = consistent and (
            tags.get("mlops.eval.passed") == str(report["passed"]).lower()
            and all(abs(report["metrics"].get(k, float("nan")) - v) < 1e-9 for k, v in metrics.items())
            and (report["model"], report["version"]) == (model, version)
            and str(report.get("max_age_hours")) == tags.get("mlops.eval.max_age_hours", "None")
            and all(report.get(k) == v for k, v in floors.items())
        )
    try:
        evaluated_at = datetime.fromisoformat(tags.get("mlops.eval.at", ""))
    except ValueError:
        return None
    return EvaluationEvidence(
        model=model,
        version=version,
        run_id=run_id,
        passed=tags.get("mlops.eval.passed") == "true",
        report_digest=tags.get("mlops.eval.report_digest", ""),
        evaluated_at=evaluated_at,
        failures=tuple(json.loads(tags.get("mlops.eval.failures", "[]"))),
        metrics=metrics,
        consistent=consistent,
        max_age_hours=float(tags["mlops.eval.max_age_hours"]) if tags.get("mlops.eval.max_age_hours") else None,
        task=floors.get("task"),
        thresholds=floors.get("thresholds"),
        fairness_limits=floors.get("fairness_limits"),
        policy_digest=floors.get("policy_sha256"),
    )


def evaluation_report(client: Any, model: str, version: int) -> tuple[dict[str, Any] | None, bool]:
    """The evaluation report of ``model`` ``version`` (``evaluation/report.json`` of the run its tags name) and
    whether the version's tags agree with it; ``(None, False)`` when there is none or it cannot be read.

    For people to look at (what an approver signs off on): the gates read ``version_evidence``.
    """
    tags = dict(model_version(client, model, version).tags)
    run_id = tags.get("mlops.eval.run_id")
    if not run_id:
        return None, False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = json.loads(
                Path(client.download_artifacts(run_id, "evaluation/report.json", tmp)).read_text("utf-8")
            )
        except Exception:  # noqa: BLE001 - a missing or unreadable report is no report to show
            return None, False
    evidence = _evaluation(client, model, version, tags)
    return report, bool(evidence is not None and evidence.consistent)


def aliased_version(client: Any, model: str, alias: str = "champion") -> Any | None:
    """The model version ``alias`` points at (the champion by default), or ``None`` when the alias is not set.

    Fails closed: only the registry's own "not found" answer means "not set". Any other error
    (a store that cannot be reached, a locked database) raises ``RunError``, because treating it
    as "no champion yet" would let a challenger pass unexamined.
    """
    try:
        return client.get_model_version_by_alias(model, alias)
    except Exception as exc:  # re-raised below unless the store said "not set"
        if _store_answered_no(exc):
            return None
        raise _unreadable(f"alias {alias!r} of registered model {model!r}", exc) from exc


def _store_answered_no(exc: Exception) -> bool:
    """Whether MLflow answered that the thing does not exist, as opposed to failing to answer.

    ``RESOURCE_DOES_NOT_EXIST`` is its "not found"; the SQL store answers a missing alias of an
    existing model, and an id of the wrong shape, with ``INVALID_PARAMETER_VALUE``.
    """
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


def _unreadable(what: str, exc: Exception) -> RunError:
    """The error that stops a gate or a tool whose evidence the store could not give: it never reads as "none"."""
    import mlflow

    from mlops_supervisor.tools.core import tracking_server_refusal

    # a tracking server's 401/403 already says what to check, and MLflow's own text of it is a paragraph
    refused = tracking_server_refusal(exc, mlflow.get_registry_uri())
    if refused is not None:
        return refused
    return RunError(
        f"could not read {what} from the MLflow store ({type(exc).__name__}: {exc}); stopped, nothing assumed"
    )


def version_evidence(client: Any, model: str, version: int) -> VersionEvidence:
    """The evidence of ``model`` ``version`` as MLflow holds it now."""
    mv = model_version(client, model, version)
    found = aliased_version(client, model)
    champion = int(found.version) if found is not None else None
    tags = dict(mv.tags)
    canary = tags.get("mlops.canary.passed")
    return VersionEvidence(
        model=model,
        version=version,
        evaluation=_evaluation(client, model, version, tags),
        champion_version=champion,
        deployed="mlops.deployed.at" in tags,
        canary_passed=None if canary in (None, "pending") else canary == "true",
    )


def approval_record(
    audit: AuditStore, *, model: str, version: int, action: str, policy: Policy
) -> ApprovalRecord | None:
    """The latest approval of ``action`` on ``model`` ``version`` whose signatures verify, in an intact audit chain.

    An audit line is not an approval: the approval is the approver's signed statement it carries
    (and the requester's signed request it answers), each verified against the keys ``policy``
    lists. A line whose signatures do not verify is passed over, whatever it says; when only such
    lines exist, ``InvalidInputError`` (``signature_invalid``) says so.
    """
    check = audit.verify()
    if not check.ok:
        raise InvalidInputError(
            "audit_chain_broken",
            f"the audit log is broken at line {check.bad_line} ({check.problem}); "
            "approvals cannot be trusted until it is restored",
        )
    found: ApprovalRecord | None = None
    forged: list[str] = []
    for record in audit.records():
        if not (
            record.get("event") == "approval"
            and record.get("decision") == "allow"
            and record.get("approval_action") == action
            and record.get("model") == model
            and record.get("version") == version
        ):
            continue
        verified = _verified_approval(record, model=model, version=version, action=action, policy=policy)
        if isinstance(verified, str):
            forged.append(f"line {record.get('seq')}: {verified}")
        else:
            found = verified
    if found is None and forged:
        raise InvalidInputError(
            "signature_invalid",
            f"no valid approval of {action} for {model} version {version}: "
            + "; ".join(forged[-3:])
            + ". An approval is a statement signed by a listed approver's key.",
        )
    return found


def _verified_approval(
    record: dict[str, Any], *, model: str, version: int, action: str, policy: Policy
) -> ApprovalRecord | str:
    """The approval ``record`` carries, built from its verified signed statements only; else why it is not one."""
    try:
        approval = Signed.model_validate(record.get("approval_signed"))
        request = Signed.model_validate(record.get("request_signed"))
    except ValidationError:
        return "no signed approval and signed request"
    for signed in (approval, request):
        problem = verify_statement(signed, policy.people)
        if problem is not None:
            return problem
    said, asked = approval.statement, request.statement
    if (said.get("kind"), said.get("decision"), said.get("action"), said.get("model"), said.get("version")) != (
        "approval",
        "approve",
        action,
        model,
        version,
    ):
        return "the signed statement approves something else"
    if asked.get("kind") != "request" or said.get("request_signature") != request.signature:
        return "the approval does not answer the signed request it carries"
    if said.get("approver") != approval.signer or said.get("requester") != request.signer:
        return "the names in the statement differ from its signers"
    try:
        expires_at = datetime.fromisoformat(str(said["expires_at"]))
    except (KeyError, ValueError):
        return "the signed statement has no valid expiry"
    return ApprovalRecord(
        model=model,
        version=version,
        action=action,
        evidence_digest=str(said.get("evidence_digest", "")),
        requester=request.signer,
        approver=approval.signer,
        approved_at=datetime.fromisoformat(record["ts"]),
        expires_at=expires_at,
        requester_key=request.key,
        approver_key=approval.key,
    )
