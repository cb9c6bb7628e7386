"""Asking only for what is missing: the inputs a lifecycle request needs, checked before anything runs.

A lifecycle request (``lifecycle [SPEC] [through STAGE] [key=value ...]``, or ``run SPEC``)
needs, for the stages it runs, the inputs the seed lists: the use case and the task, the data
source and its sensitivity, where tracking and the registry live, the quality gates, who
approves production, the serving target and its latency goal, what is monitored and who is
alerted. Each comes from the pipeline spec, the request's ``key=value`` answers, the policy in
force (thresholds, fairness limits, approvers: the policy is a trust root, so an answer may
only name approvers it already lists) or the settings (the tracking store). Nothing is
guessed: what is still missing is listed, one short question each, and nothing is recorded.

Which stage first needs what (``NEEDED_FROM``): the data stage needs the spec's contents (data
source, target, task, model name); evaluate needs thresholds; deploy needs the use case, the
data's sensitivity (both go on record before a model is exposed to callers), the approvers,
the serving target and the latency goal; monitor needs what to watch and where alerts go.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlops_supervisor._state import STAGES
from mlops_supervisor.policies import Policy, UsageError
from mlops_supervisor.policies.errors import describe_validation_error
from mlops_supervisor.policies.floors import LOSSES
from mlops_supervisor.policies.policy import check_alert_route
from mlops_supervisor.tools._spec import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    SENSITIVITIES,
    SERVING_TARGETS,
    WATCHABLE,
    DataSpec,
    LoadedSpec,
    PipelineSpec,
)
from mlops_supervisor.tools.core._schemas import checked_name

__all__ = [
    "ANSWER_KEYS",
    "NEEDED_FROM",
    "LifecycleCheck",
    "LifecycleRequest",
    "MissingInput",
    "MissingInputsError",
    "check_lifecycle",
    "is_lifecycle",
    "parse_lifecycle",
    "with_answer",
]

DEFAULT_THROUGH = "monitor"
"""A lifecycle request without ``through`` runs every stage, as ``run SPEC`` does: the same questions for both."""

QUESTIONS: dict[str, str] = {
    "data_source": "Where is the data? (a CSV or Parquet path, or sklearn:NAME)",
    "target": "Which column does the model predict?",
    "task": "What kind of model is it? (classification or regression)",
    "model": "What is the registered model to be called? (1-64 letters, digits, '_', '.' or '-')",
    "thresholds": "Which metrics must the model reach? (metric:value, comma-separated, e.g. roc_auc:0.8,accuracy:0.75)",
    "use_case": "What is the model for? (one sentence)",
    "sensitivity": "How sensitive is the data? (public, internal, confidential or restricted)",
    "approvers": "Who approves production? (names the policy in force lists as approvers, other than you)",
    "serving_target": "Where is the model served? (local, kubernetes or kserve; the cluster forms need a spec "
    "with a serving.kubernetes section)",
    "latency_p95_ms": "What p95 latency must a prediction keep, in milliseconds?",
    "watch": "What is monitored? (any of latency, errors, drift, quality, bias; comma-separated)",
    "alert": "Where do alerts go? (log, email:ADDRESS, slack:#CHANNEL or webhook:https://HOST/PATH)",
}
"""Every input a lifecycle request may be asked for, in the order they are asked, with its question."""

NEEDED_FROM: dict[str, str] = {
    "data_source": "data",
    "target": "data",
    "task": "data",
    "model": "data",
    "thresholds": "evaluate",
    "use_case": "deploy",
    "sensitivity": "deploy",
    "approvers": "deploy",
    "serving_target": "deploy",
    "latency_p95_ms": "deploy",
    "watch": "monitor",
    "alert": "monitor",
}
"""The first stage that needs each input."""

_OPTIONAL = ("positive_class", "sensitive_features", "owner")
ANSWER_KEYS: tuple[str, ...] = (*QUESTIONS, *_OPTIONAL)
"""Every ``key=value`` a lifecycle request takes."""

# What only a new spec takes: with a spec file, the file says these.
_SPEC_ONLY = ("data_source", "target", "task", "model", "thresholds", "positive_class", "sensitive_features")
_PLACEHOLDER = re.compile(r"<[A-Z][A-Z_]*>")
_LIFECYCLE = re.compile(r"^\s*lifecycle(?:\s|$)", re.IGNORECASE)
_CLUSTER_TARGETS = ("kubernetes", "kserve")
# Quick candidates per task, tried in this order against the policy's estimators.
_PREFERRED: dict[str, tuple[tuple[str, str, dict[str, Any]], ...]] = {
    "classification": (
        ("logistic-regression", "sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
        ("gradient-boosting", "sklearn.ensemble.HistGradientBoostingClassifier", {}),
    ),
    "regression": (
        ("ridge", "sklearn.linear_model.Ridge", {}),
        ("gradient-boosting", "sklearn.ensemble.HistGradientBoostingRegressor", {}),
    ),
}
_METRIC = {"classification": "roc_auc", "regression": "rmse"}


class MissingInput(BaseModel):
    """One input a lifecycle request still needs: its key, the question that asks for it, and what was wrong with
    the answer given, if one was."""

    key: str
    question: str
    problem: str = ""

    def line(self) -> str:
        """The input as one line: key, question and, when an answer was refused, why."""
        return f"{self.key}: {self.question}" + (f" (not accepted: {self.problem})" if self.problem else "")


class MissingInputsError(UsageError):
    """A lifecycle request lacks inputs (exit 2); ``missing`` lists each with its question."""

    def __init__(self, missing: list[MissingInput]) -> None:
        self.missing = list(missing)
        lines = "\n".join(f"  {m.line()}" for m in self.missing)
        super().__init__(
            f"the request needs {len(self.missing)} more input(s) before anything runs; answer each as key=value "
            f"in the request (lifecycle ... key=value) or set it in the spec:\n{lines}"
        )


@dataclass(frozen=True)
class LifecycleRequest:
    """A parsed lifecycle request: the spec (if any), the last stage and the answers."""

    spec: str | None = None
    through: str | None = None
    answers: dict[str, str] = field(default_factory=dict)


@dataclass
class LifecycleCheck:
    """What the check found: what is missing, else the spec to run (loaded or still to write) and the Plan's lines."""

    through: str
    missing: list[MissingInput]
    loaded: LoadedSpec | None = None
    new_spec: dict[str, Any] | None = None
    objective: list[str] = field(default_factory=list)


def is_lifecycle(request: str) -> bool:
    """True for a request in the lifecycle form (``lifecycle ...``)."""
    return bool(_LIFECYCLE.match(request))


def _tokens(request: str) -> list[str]:
    try:
        return shlex.split(request)
    except ValueError as exc:
        raise UsageError(f"the request {request.strip()!r} cannot be read: {exc}; close its quotes") from None


def parse_lifecycle(request: str) -> LifecycleRequest | None:
    """The lifecycle request ``request`` holds, or None when it is not one; ``UsageError`` for a bad one."""
    if not is_lifecycle(request):
        return None
    tokens = _tokens(request)[1:]
    spec: str | None = None
    through: str | None = None
    answers: dict[str, str] = {}
    usage = "lifecycle [SPEC] [through STAGE] [key=value ...]"
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.lower() == "through":
            if i + 1 == len(tokens) or tokens[i + 1].lower() not in STAGES:
                got = tokens[i + 1] if i + 1 < len(tokens) else "nothing"
                raise UsageError(f"'through' takes a stage, got {got!r}; allowed: {', '.join(STAGES)}")
            through = tokens[i + 1].lower()
            i += 2
            continue
        key, eq, value = token.partition("=")
        if eq:
            if key not in ANSWER_KEYS:
                raise UsageError(f"a lifecycle request takes no {key!r}; keys: {', '.join(ANSWER_KEYS)}")
            if key in answers:
                raise UsageError(f"{key} is answered twice; give it once")
            answers[key] = value.strip()
        elif spec is None:
            spec = token
        else:
            raise UsageError(f"{token!r} is not understood in a lifecycle request ({usage})")
        i += 1
    return LifecycleRequest(spec=spec, through=through, answers=answers)


def with_answer(request: str, key: str, answer: str) -> str:
    """``request`` with ``answer`` folded in as ``key=value`` (quoted as needed), replacing an earlier answer."""
    if key not in ANSWER_KEYS:
        raise UsageError(f"{key!r} is not an input a lifecycle request takes; keys: {', '.join(ANSWER_KEYS)}")
    pair = shlex.quote(f"{key}={answer.strip()}")
    tokens = _tokens(request)
    if not any(t.startswith(f"{key}=") for t in tokens):
        return f"{request.rstrip()} {pair}"
    return shlex.join([f"{key}={answer.strip()}" if t.startswith(f"{key}=") else t for t in tokens])


# --- the check -----------------------------------------------------------------------------


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_thresholds(value: str, task: str | None) -> dict[str, float]:
    metrics = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}.get(
        task or "", CLASSIFICATION_METRICS + REGRESSION_METRICS
    )
    found: dict[str, float] = {}
    for part in _names(value):
        name, colon, number = part.partition(":")
        if not colon or name.strip() not in metrics:
            raise ValueError(f"{part!r} is not metric:value with a metric among {', '.join(metrics)}")
        try:
            found[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"{part!r}: {number!r} is not a number") from None
    if not found:
        raise ValueError("no metric:value given")
    return found


def _data_source(value: str) -> str:
    source = value if value.startswith("sklearn:") else str(Path(value).expanduser().absolute())
    try:
        DataSpec.model_validate({"source": source, "target": "-"})  # the spec's own rule for a source
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, show_input=False)) from None
    if not source.startswith("sklearn:") and not Path(source).is_file():
        raise ValueError(f"data file {source} does not exist")
    return source


def _checked_answer(key: str, value: str, task: str | None) -> Any:
    """The answer ``value`` for ``key`` as the spec holds it; ``ValueError`` naming what is wrong and allowed."""
    if _PLACEHOLDER.search(value):
        raise ValueError(
            f"it held personal data or a secret, which the supervisor does not keep (it reads {value!r}); "
            "give it without, or set it in the spec file"
        )
    if not value:
        raise ValueError("the answer is empty")
    if key == "data_source":
        return _data_source(value)
    if key == "task":
        if value not in _METRIC:
            raise ValueError(f"task {value!r} is not classification or regression")
        return value
    if key == "model":
        return checked_name("model", value)
    if key == "thresholds":
        return _parse_thresholds(value, task)
    if key == "use_case":
        if not 3 <= len(value) <= 500:
            raise ValueError("a use case is 3 to 500 characters")
        return value
    if key == "sensitivity":
        if value not in SENSITIVITIES:
            raise ValueError(f"sensitivity {value!r} is not one of {', '.join(SENSITIVITIES)}")
        return value
    if key == "serving_target":
        if value not in SERVING_TARGETS:
            raise ValueError(f"serving target {value!r} is not one of {', '.join(SERVING_TARGETS)}")
        return value
    if key == "latency_p95_ms":
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number of milliseconds") from None
        if not 0 < number <= 600_000:
            raise ValueError(f"{value} ms is not between 0 and 600000")
        return number
    if key == "watch":
        items = _names(value)
        unknown = [w for w in items if w not in WATCHABLE]
        if unknown or not items or len(set(items)) != len(items):
            raise ValueError(f"{value!r}: name each of {', '.join(WATCHABLE)} at most once, comma-separated")
        return tuple(items)
    if key == "alert":
        return check_alert_route(value)
    if key == "sensitive_features":
        return tuple(_names(value))
    return value


def _spec_value(spec: PipelineSpec, key: str) -> Any:
    values: dict[str, Any] = {
        "data_source": spec.data.source,
        "target": spec.data.target,
        "task": spec.training.task,
        "model": spec.model.name,
        "thresholds": spec.evaluation.thresholds or None,
        "use_case": spec.use_case,
        "sensitivity": spec.data.sensitivity,
        "serving_target": spec.serving.target,
        "latency_p95_ms": spec.serving.latency_p95_ms,
        "watch": spec.monitoring.watch or None,
        "alert": spec.monitoring.alert,
        "owner": spec.monitoring.owner,
        "positive_class": spec.data.positive_class,
        "sensitive_features": spec.data.sensitive_features or None,
    }
    return values.get(key)


def _approvers(answer: str | None, policy: Policy, requester: str) -> tuple[list[str] | None, MissingInput | None]:
    """The approvers of production, or the ``MissingInput`` that asks for them (with the problem of a bad answer)."""
    listed = [a for a in policy.approvers if a != requester]
    fix = (
        "only a signed `mlops-supervisor policy apply` adds an approver (approved by a listed approver when it "
        "loosens the policy)"
    )
    if answer is None:
        if listed:
            return listed, None
        if requester in policy.approvers:
            question = (
                f"Who approves production? The policy in force lists only you ({requester}), and nobody approves "
                f"their own request: {fix}; then name them (approvers=NAME)."
            )
        else:
            question = f"Who approves production? The policy in force lists no approvers: {fix}; then name them."
        return None, MissingInput(key="approvers", question=question)
    names = _names(answer)
    problems = []
    if _PLACEHOLDER.search(answer):
        problems.append(
            f"{answer!r} held what looks like a person's full name, which the supervisor does not keep; "
            "name approvers as the policy does"
        )
    for name in names:
        if name == requester:
            problems.append(f"{name} is the requester and may not approve their own request")
        elif name not in policy.approvers:
            problems.append(f"{name} is not an approver in the policy in force")
    if problems or not names:
        allowed = ", ".join(listed) or "none"
        problem = "; ".join(problems or ["no name given"]) + f" (approvers it lists, other than you: {allowed}; {fix})"
        return None, MissingInput(key="approvers", question=QUESTIONS["approvers"], problem=problem)
    return names, None


def check_lifecycle(
    request: LifecycleRequest,
    *,
    policy: Policy,
    requester: str,
    tracking_uri: str,
    through: str | None = None,
    loaded: LoadedSpec | None = None,
) -> LifecycleCheck:
    """Check ``request`` (with its spec ``loaded``, already preflighted, when it names one) against the policy and
    settings for the stages up to ``through`` (default: the request's own, else monitor).

    ``missing`` lists every input still needed, in the order of ``QUESTIONS``; when it is empty, ``loaded`` or
    ``new_spec`` is what runs and ``objective`` holds the Plan's restatement of the objective and acceptance
    criteria.
    """
    stage = through or request.through or DEFAULT_THROUGH
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
    reached = set(STAGES[: STAGES.index(stage) + 1])
    spec = loaded.spec if loaded is not None else None
    missing: list[MissingInput] = []
    values: dict[str, Any] = {}
    task = spec.training.task if spec is not None else request.answers.get("task")
    for key in ANSWER_KEYS:
        if key == "approvers":
            continue
        from_spec = _spec_value(spec, key) if spec is not None else None
        answer = request.answers.get(key)
        needed = NEEDED_FROM.get(key) in reached
        if answer is not None and spec is not None and key in _SPEC_ONLY:
            missing.append(
                MissingInput(
                    key=key,
                    question=QUESTIONS.get(key, key),
                    problem=f"the spec {loaded.path if loaded else ''} says this; edit the spec to change it",
                )
            )
            continue
        if answer is not None:
            try:
                value = _checked_answer(key, answer, task)
            except ValueError as exc:
                missing.append(MissingInput(key=key, question=QUESTIONS.get(key, key), problem=str(exc)))
                continue
            if from_spec is not None and from_spec != value:
                missing.append(
                    MissingInput(
                        key=key,
                        question=QUESTIONS.get(key, key),
                        problem=f"the spec sets it to {from_spec!r}; an answer cannot change the spec (edit it)",
                    )
                )
                continue
            values[key] = value
        elif from_spec is not None:
            values[key] = from_spec
        if key == "thresholds" and key not in values and (task not in _METRIC or policy.evaluation.floors(task)):
            continue  # the policy's floors are the gate (or the task, asked for first, decides)
        if needed and key not in values and key in QUESTIONS:
            missing.append(MissingInput(key=key, question=QUESTIONS[key]))
    target = values.get("serving_target")
    if "deploy" in reached and target in _CLUSTER_TARGETS and (spec is None or spec.serving.kubernetes is None):
        # the cluster forms need a namespace and an image or a storage URI: more than one answer carries
        missing.append(
            MissingInput(
                key="serving_target",
                question=QUESTIONS["serving_target"],
                problem=f"{target} needs the cluster's details (namespace, image or storage_uri): write them in a "
                "spec's serving.kubernetes section (`mlops-supervisor spec schema`) and name the spec",
            )
        )
    approvers: list[str] | None = None
    if "deploy" in reached or "approvers" in request.answers:
        approvers, asked = _approvers(request.answers.get("approvers"), policy, requester)
        if asked is not None:
            missing.append(asked)
    order = list(QUESTIONS) + list(_OPTIONAL)
    missing.sort(key=lambda m: order.index(m.key))
    check = LifecycleCheck(through=stage, missing=missing, loaded=loaded)
    if missing:
        return check
    if spec is None:
        check.new_spec = new_spec_document(values, policy)
        try:
            spec = PipelineSpec.model_validate(check.new_spec)
        except ValidationError as exc:
            raise UsageError(
                f"the answers do not make a valid spec: {describe_validation_error(exc, show_input=False)}"
            ) from None
    check.objective = objective_lines(
        spec, values, approvers=approvers, requester=requester, policy=policy, tracking_uri=tracking_uri, through=stage
    )
    return check


def new_spec_document(values: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The spec a lifecycle request without one runs: its answers, and quick candidates the policy allows."""
    task = str(values["task"])
    allowed = [e for e in policy.training.estimators if e in dict((p[1], 0) for p in _PREFERRED[task])]
    candidates = [
        {"name": name, "estimator": estimator, "params": params}
        for name, estimator, params in _PREFERRED[task]
        if estimator in allowed
    ]
    if not candidates:
        from mlops_supervisor.policies.estimators import ALLOWED_ESTIMATORS

        first = next((e for e in policy.training.estimators if ALLOWED_ESTIMATORS.get(e) == task), None)
        if first is None:
            raise UsageError(f"the policy in force allows no {task} estimator (training.estimators)")
        candidates = [{"name": first.rsplit(".", 1)[1].lower(), "estimator": first}]
    data: dict[str, Any] = {"source": values["data_source"], "target": values["target"]}
    for key, field_name in (
        ("positive_class", "positive_class"),
        ("sensitive_features", "sensitive_features"),
        ("sensitivity", "sensitivity"),
    ):
        if key in values:
            data[field_name] = list(values[key]) if isinstance(values[key], tuple) else values[key]
    doc: dict[str, Any] = {"version": 1, "name": values["model"]}
    if "use_case" in values:
        doc["use_case"] = values["use_case"]
    doc |= {
        "data": data,
        "training": {"task": task, "metric": _METRIC[task], "candidates": candidates},
        "model": {"name": values["model"]},
    }
    if "thresholds" in values:
        doc["evaluation"] = {"thresholds": values["thresholds"]}
    serving = {
        k: values[s] for k, s in (("target", "serving_target"), ("latency_p95_ms", "latency_p95_ms")) if s in values
    }
    if serving:
        doc["serving"] = serving
    monitoring: dict[str, Any] = {k: values[k] for k in ("owner", "alert") if k in values}
    if "watch" in values:
        monitoring["watch"] = list(values["watch"])
    if monitoring:
        doc["monitoring"] = monitoring
    return doc


def spec_file_for(doc: dict[str, Any], specs_dir: Path) -> tuple[Path, str]:
    """Where a new spec ``doc`` is written (content-addressed: the same answers, the same file) and its text."""
    text = "# Written by mlops-supervisor from a lifecycle request's answers.\n" + yaml.safe_dump(doc, sort_keys=False)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return specs_dir / f"{doc['name']}-{digest}.yaml", text


def _bound(metric: str, value: float) -> str:
    return f"{metric} {'≤' if metric in LOSSES else '≥'} {value:g}"


def objective_lines(
    spec: PipelineSpec,
    values: dict[str, Any],
    *,
    approvers: list[str] | None,
    requester: str,
    policy: Policy,
    tracking_uri: str,
    through: str,
) -> list[str]:
    """The Plan's restatement: the objective, then the acceptance criteria of the stages up to ``through``."""
    from mlops_supervisor.tools.evaluation import combined_thresholds, fairness_limits

    reached = STAGES[: STAGES.index(through) + 1]
    use_case = values.get("use_case") or spec.use_case
    sensitivity = values.get("sensitivity") or spec.data.sensitivity
    lines = [
        "**Objective**: "
        + (f"{use_case}; " if use_case else "")
        + f"a {spec.training.task} model `{spec.model.name}` predicting `{spec.data.target}` from "
        + f"`{spec.data.source}`"
        + (f" ({sensitivity} data)" if sensitivity else "")
        + f"; stages {' → '.join(reached)}.",
        f"**Tracking and registry**: {tracking_uri}.",
        "**Acceptance criteria**:",
    ]
    if STAGES.index(through) >= STAGES.index("evaluate"):
        floors = combined_thresholds(policy.evaluation.floors(spec.training.task), spec.evaluation.thresholds)
        lines.append(
            "- metrics on the held-out test split: "
            + (", ".join(_bound(m, v) for m, v in sorted(floors.items())) or "none set")
            + " (the spec's thresholds, never looser than the policy's floors)"
        )
        if spec.data.sensitive_features:
            limits = fairness_limits(policy.evaluation.fairness, spec.evaluation.fairness)
            lines.append(
                "- fairness across "
                + ", ".join(spec.data.sensitive_features)
                + ": "
                + (", ".join(f"{m} ≤ {v:g}" for m, v in sorted(limits.items())) or "no limits set")
            )
        else:
            lines.append("- fairness: no sensitive features named, so no group is compared")
    else:
        lines.append(f"- the data passes its contract (at least {spec.data.checks.min_rows} rows), then training")
    if STAGES.index(through) >= STAGES.index("deploy"):
        analysis = spec.deployment.analysis
        steps = " → ".join(f"{s} %" for s in spec.deployment.canary_steps)
        lines.append(
            f"- canary {steps}: each step at least {analysis.min_requests} requests over {analysis.window_seconds:g} s, "
            f"error rate up by at most {analysis.max_error_rate_increase:g}, p95 latency at most "
            f"{analysis.max_p95_latency_ratio:g}× the champion's; full traffic only through the champion gate"
        )
        target = values.get("serving_target") or spec.serving.target
        latency = values.get("latency_p95_ms") or spec.serving.latency_p95_ms
        lines.append(f"- served {target}, p95 latency goal {latency:g} ms")
        lines.append(
            f"- production is approved by {' or '.join(approvers or [])}, signed, and not by the requester "
            f"({requester})"
        )
    if STAGES.index(through) >= STAGES.index("monitor"):
        watch = values.get("watch") or spec.monitoring.watch
        alert = values.get("alert") or spec.monitoring.alert
        owner = values.get("owner") or spec.monitoring.owner
        lines.append(
            f"- monitoring watches {', '.join(watch)}; alerts go to {alert}" + (f" (owner {owner})" if owner else "")
        )
    return lines
