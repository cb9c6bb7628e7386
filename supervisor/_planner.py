"""The offline planner: a deterministic reading of a small command grammar.

It needs no key and no network. A request is one command, or several joined by
``;`` or ``then``; each command names one specialist and one tool call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlops_supervisor.policies import UsageError

__all__ = ["GRAMMAR_HELP", "PlannedCommand", "parse_command", "parse_request"]


@dataclass(frozen=True)
class PlannedCommand:
    """One parsed command: the text, the specialist it goes to and the tool call it means."""

    text: str
    agent: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)


_NAME = r"(?P<model>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_VERSION = r"(?:version|v)\s*(?P<version>\d+)"


@dataclass(frozen=True)
class _Rule:
    usage: str
    summary: str
    pattern: re.Pattern[str]
    agent: str
    tool: str
    args: Callable[[re.Match[str]], dict[str, Any]]


def _rule(
    usage: str, summary: str, pattern: str, agent: str, tool: str, args: Callable[[re.Match[str]], dict[str, Any]]
) -> _Rule:
    return _Rule(usage, summary, re.compile(rf"^\s*{pattern}\s*$", re.IGNORECASE), agent, tool, args)


_RULES: tuple[_Rule, ...] = (
    _rule(
        "load SOURCE",
        "describe a data set: CSV, Parquet or sklearn:NAME (data)",
        r"load\s+(?P<source>\S+)",
        "data",
        "load_dataset",
        lambda m: {"source": m["source"]},
    ),
    _rule(
        "validate SPEC",
        "validate the spec's data (data)",
        r"validate\s+(?P<spec>\S+)",
        "data",
        "validate_dataset",
        lambda m: {"spec": m["spec"]},
    ),
    _rule(
        "scan pii SPEC",
        "find the spec's PII columns (data)",
        r"scan\s+pii\s+(?P<spec>\S+)",
        "data",
        "scan_pii",
        lambda m: {"spec": m["spec"]},
    ),
    _rule(
        "version SPEC",
        "store the spec's data content-addressed, PII removed (data)",
        r"version\s+(?P<spec>\S+)",
        "data",
        "version_dataset",
        lambda m: {"spec": m["spec"]},
    ),
    _rule(
        "split SPEC",
        "seeded train/validation/test split and reference profile (data)",
        r"split\s+(?P<spec>\S+)",
        "data",
        "split_dataset",
        lambda m: {"spec": m["spec"]},
    ),
    _rule(
        "runs EXPERIMENT",
        "recent MLflow runs of an experiment (experimentation)",
        r"runs\s+(?P<experiment>\S+)",
        "experimentation",
        "list_runs",
        lambda m: {"experiment": m["experiment"]},
    ),
    _rule(
        "train SPEC",
        "train the spec's candidates (experimentation)",
        r"train\s+(?P<spec>\S+)",
        "experimentation",
        "train_model",
        lambda m: {"spec": m["spec"]},
    ),
    _rule(
        "evaluate MODEL version N",
        "evaluate a model version on held-out data (evaluation)",
        rf"evaluate\s+{_NAME}\s+{_VERSION}",
        "evaluation",
        "evaluate_model",
        lambda m: {"model": m["model"], "version": int(m["version"])},
    ),
    _rule(
        "register MODEL from run RUN_ID",
        "register a version from a training run (registry)",
        rf"register\s+{_NAME}\s+from\s+run\s+(?P<run>\S+)",
        "registry",
        "register_model",
        lambda m: {"model": m["model"], "run_id": m["run"]},
    ),
    _rule(
        "deploy MODEL version N [to production|staging]",
        "deploy a version: a canary in production (the first needs an approval), or its own staging endpoint "
        "(deployment)",
        rf"deploy\s+{_NAME}\s+{_VERSION}(?:\s+to\s+(?P<target>production|staging|canary))?",
        "deployment",
        "deploy_model",
        lambda m: {"model": m["model"], "version": int(m["version"]), "target": (m["target"] or "production").lower()},
    ),
    _rule(
        "promote MODEL version N [to production]",
        "promote to production; needs an approval (deployment)",
        rf"promote\s+{_NAME}\s+{_VERSION}(?:\s+to\s+production)?",
        "deployment",
        "promote_model",
        lambda m: {"model": m["model"], "version": int(m["version"])},
    ),
    _rule(
        "rollback MODEL",
        "restore the last known-good version (deployment)",
        rf"roll\s*back\s+{_NAME}",
        "deployment",
        "rollback_model",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "analyze canary MODEL",
        "judge the canary's traffic; pass steps up, fail rolls back (deployment)",
        rf"analy[sz]e\s+canary\s+{_NAME}",
        "deployment",
        "advance_canary",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "metrics MODEL",
        "latency, errors and throughput per version (observability)",
        rf"metrics\s+{_NAME}",
        "observability",
        "service_metrics",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "drift MODEL",
        "drift of live traffic against the training data, with alerts (observability)",
        rf"drift\s+{_NAME}",
        "observability",
        "drift_report",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "quality MODEL",
        "live quality and bias on labelled predictions against the version's evaluation, with alerts (observability)",
        rf"quality\s+{_NAME}",
        "observability",
        "quality_report",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "monitor MODEL",
        "every check the model's spec watches, alerts routed to its owner, remedies proposed (observability)",
        rf"monitor\s+{_NAME}",
        "observability",
        "monitor_model",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "status MODEL",
        "versions, weights and health of a model's endpoint (deployment)",
        rf"status\s+{_NAME}",
        "deployment",
        "endpoint_status",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "status",
        "recent activity from the audit trail (observability)",
        r"status",
        "observability",
        "audit_summary",
        lambda m: {},
    ),
    _rule(
        "verify audit",
        "check the audit chain (security)",
        r"verify\s+audit",
        "security",
        "verify_audit_chain",
        lambda m: {},
    ),
    _rule("show policy", "the policy in force (security)", r"show\s+policy", "security", "show_policy", lambda m: {}),
    _rule(
        "scan file PATH",
        "scan a workspace file for injection, secrets and PII (security)",
        r"scan\s+file\s+(?P<path>\S+)",
        "security",
        "scan_prompt_injection",
        lambda m: {"path": m["path"]},
    ),
    _rule(
        "scan model MODEL",
        "scan a registered model's descriptions and tags (security)",
        rf"scan\s+model\s+{_NAME}",
        "security",
        "scan_prompt_injection",
        lambda m: {"model": m["model"]},
    ),
    _rule(
        "scan TEXT",
        "scan text for prompt injection, secrets and PII (security)",
        r"scan\s+(?P<text>[\s\S]+?)",
        "security",
        "scan_prompt_injection",
        lambda m: {"text": m["text"]},
    ),
    _rule(
        "review audit",
        "anomalies in the audit log: refusals, self-approvals, quarantines (security)",
        r"review\s+(?:the\s+)?audit(?:\s+log)?",
        "security",
        "review_audit",
        lambda m: {},
    ),
    _rule(
        "permissions",
        "who may call what: agent x tool x gate x approval (security)",
        r"permissions(?:\s+matrix)?",
        "security",
        "permission_matrix",
        lambda m: {},
    ),
    _rule(
        "security report",
        "write the security report under reports/security/ (security)",
        r"security\s+report",
        "security",
        "security_report",
        lambda m: {},
    ),
)

_CALL = re.compile(r"^\s*call\s+(?P<tool>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<args>\{.*\})?\s*$", re.IGNORECASE | re.DOTALL)
_CALL_USAGE = ("call TOOL [JSON-ARGS]", "call one tool through the specialist that owns it")
_LIFECYCLE_USAGE = (
    "lifecycle [SPEC] [through STAGE] [key=value ...]",
    "run SPEC's stages through STAGE (default monitor) once every input they need is known; "
    "what is missing is listed, never guessed",
    "without SPEC, data_source=, target=, task= and model= answers make one; a request of its own",
)


def _parse_call(text: str) -> PlannedCommand | None:
    match = _CALL.match(text)
    if match is None:
        return None
    from mlops_supervisor.agents import SPECIALISTS

    tool = match["tool"]
    owner = next((spec.name for spec in SPECIALISTS.values() if tool in spec.tools), None)
    if owner is None:
        known = ", ".join(sorted(t for spec in SPECIALISTS.values() for t in spec.tools))
        raise UsageError(f"no specialist owns a tool named {tool!r}; tools: {known}")
    try:
        args = json.loads(match["args"]) if match["args"] else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"the arguments of {text.strip()!r} are not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise UsageError(f"the arguments of {text.strip()!r} must be a JSON object")
    return PlannedCommand(text=text.strip(), agent=owner, tool=tool, args=args)


GRAMMAR_HELP = "\n".join(
    [
        "Commands the offline planner understands (join several with ';' or 'then'):",
        *(f"  {rule.usage:<44} {rule.summary}" for rule in _RULES),
        f"  {_CALL_USAGE[0]:<44} {_CALL_USAGE[1]}",
        f"  {_LIFECYCLE_USAGE[0]}",
        *(f"  {'':<44} {line}" for line in _LIFECYCLE_USAGE[1:]),
        f"  {'help':<44} this list",
    ]
)

_SPLIT = re.compile(r"\s*(?:;|\bthen\b)\s*(?![^{]*\})", re.IGNORECASE)


def is_help(request: str) -> bool:
    """True for a request that asks for the grammar."""
    return request.strip().lower() in {"help", "?", "commands"}


def parse_command(text: str) -> PlannedCommand:
    """One command; ``UsageError`` naming the text and the grammar when it fits no rule."""
    call = _parse_call(text)
    if call is not None:
        return call
    if re.match(r"^\s*lifecycle(?:\s|$)", text, re.IGNORECASE):
        raise UsageError(
            f"{text.strip()!r}: a lifecycle request is a request of its own; send it alone, not joined with "
            "';' or 'then'"
        )
    for rule in _RULES:
        match = rule.pattern.match(text)
        if match:
            return PlannedCommand(text=text.strip(), agent=rule.agent, tool=rule.tool, args=rule.args(match))
    raise UsageError(f"the offline planner does not understand {text.strip()!r}.\n{GRAMMAR_HELP}")


def parse_request(request: str) -> list[PlannedCommand]:
    """Every command of a request, in order; ``[]`` for ``help``."""
    if is_help(request):
        return []
    parts = [p for p in _SPLIT.split(request) if p.strip()]
    if not parts:
        raise UsageError(f"the request is empty.\n{GRAMMAR_HELP}")
    return [parse_command(p) for p in parts]
