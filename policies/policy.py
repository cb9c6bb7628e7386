"""The policy file: a YAML document validated with pydantic, with a shipped default."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops_supervisor.policies.errors import PolicyFileError, describe_validation_error
from mlops_supervisor.policies.estimators import ALLOWED_ESTIMATORS
from mlops_supervisor.policies.identity import fingerprint, parse_public_key
from mlops_supervisor.policies.pii import DEFAULT_PII_ENTITIES

__all__ = [
    "ALERT_ROUTE_KINDS",
    "AlertRouteRule",
    "ApprovalSettings",
    "CanaryRules",
    "EvaluationRules",
    "Limits",
    "MonitoringRules",
    "PiiRules",
    "Policy",
    "ToolRules",
    "TrainingRules",
    "check_alert_route",
    "default_policy_text",
    "load_policy",
    "parse_policy",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApprovalSettings(_Strict):
    """Which tools need a human approval, and for how long a request stays valid."""

    required_for: tuple[str, ...] = ("promote_model", "remove_alias")
    ttl_minutes: int = Field(default=1440, ge=1, le=60 * 24 * 30)


class Limits(_Strict):
    """Budgets that stop a runaway request."""

    max_steps: int = Field(default=40, ge=1, le=10_000)
    recursion_limit: int = Field(default=100, ge=5, le=100_000)


class ToolRules(_Strict):
    """Tools denied to every agent."""

    denied: tuple[str, ...] = ()


class PiiRules(_Strict):
    """What counts as PII in a data set, how it is found, and what happens to a column that holds it."""

    action: Literal["drop", "hash"] = "drop"
    entities: tuple[str, ...] = DEFAULT_PII_ENTITIES
    min_fraction: float = Field(default=0.3, gt=0, le=1)
    sample_size: int = Field(default=200, ge=10, le=100_000)
    min_score: float = Field(default=0.4, ge=0, le=1)


class TrainingRules(_Strict):
    """Which estimators a spec may name and how much searching one run may do."""

    estimators: tuple[str, ...] = tuple(ALLOWED_ESTIMATORS)
    max_search_candidates: int = Field(default=50, ge=1, le=10_000)
    max_fits: int = Field(default=600, ge=1, le=100_000)

    @model_validator(mode="after")
    def _estimators_are_known(self) -> TrainingRules:
        unknown = [e for e in self.estimators if e not in ALLOWED_ESTIMATORS]
        if unknown:
            raise ValueError(
                f"training.estimators may only narrow the built-in allow-list; not on it: {', '.join(unknown)}"
            )
        return self


class EvaluationRules(_Strict):
    """Floors every evaluation must meet; a spec may tighten them, never loosen them."""

    thresholds: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.75, "accuracy": 0.7})
    """Floors (ceilings for losses) of a classifier's metrics."""
    regression_thresholds: dict[str, float] = Field(default_factory=lambda: {"r2": 0.3})
    """Floors (ceilings for losses) of a regressor's metrics: rmse, mae and r2."""
    fairness: dict[str, float] = Field(
        default_factory=lambda: {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.25}
    )
    max_age_hours: float = Field(default=168, gt=0)

    def floors(self, task: str) -> dict[str, float]:
        """The thresholds in force for a model of ``task`` (classification or regression)."""
        return dict(self.regression_thresholds if task == "regression" else self.thresholds)

    @model_validator(mode="after")
    def _regression_metrics_only(self) -> EvaluationRules:
        unknown = set(self.regression_thresholds) - {"rmse", "mae", "r2"}
        if unknown:
            raise ValueError(
                f"evaluation.regression_thresholds knows rmse, mae and r2; not {', '.join(sorted(unknown))}"
            )
        return self

    @model_validator(mode="after")
    def _known_fairness_metrics(self) -> EvaluationRules:
        unknown = set(self.fairness) - {"demographic_parity_difference", "equalized_odds_difference"}
        if unknown:
            raise ValueError(
                f"evaluation.fairness knows demographic_parity_difference and equalized_odds_difference; "
                f"not {', '.join(sorted(unknown))}"
            )
        return self


ALERT_ROUTE_KINDS = ("log", "email", "slack", "webhook")
_ALERT_ROUTE = re.compile(r"^(?:log|(?:email|slack|webhook):\S+)$")


def check_alert_route(route: str) -> str:
    """``route`` when it is one the alerts can take (``log``, ``email:ADDRESS``, ``slack:#CHANNEL``,
    ``webhook:URL``, the URL http or https with a host); ``ValueError`` naming it and the allowed forms otherwise."""
    from urllib.parse import urlsplit

    allowed = "log, email:ADDRESS, slack:#CHANNEL, webhook:https://HOST/PATH"
    if not _ALERT_ROUTE.match(route):
        raise ValueError(f"alert route {route!r} is not one of: {allowed}")
    kind, _, target = route.partition(":")
    if kind == "webhook":
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018 - a port that is not a number, or out of range, raises here
        except ValueError as exc:
            raise ValueError(
                f"alert route {route!r} is not one of: {allowed} (its URL does not parse: {exc})"
            ) from None
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"alert route {route!r} is not one of: {allowed} (the URL needs http or https and a host)")
    return route


_FAIRNESS_METRICS = frozenset({"demographic_parity_difference", "equalized_odds_difference"})


class AlertRouteRule(_Strict):
    """Who owns a model in production and where its alerts go."""

    owner: str = Field(min_length=1)
    alert: str

    @model_validator(mode="after")
    def _route(self) -> AlertRouteRule:
        check_alert_route(self.alert)
        return self


class MonitoringRules(_Strict):
    """When live traffic raises an alert, and where alerts go."""

    psi_threshold: float = Field(default=0.2, gt=0)
    p_value: float = Field(default=0.01, gt=0, lt=1)
    min_samples: int = Field(default=100, ge=10)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_latency_ms: float = Field(default=250, gt=0)
    min_labelled: int = Field(default=200, ge=10)
    """Labelled predictions a version needs in the window before its live quality and bias are judged."""
    min_group_labelled: int = Field(default=30, ge=1)
    """Labelled predictions a group of a sensitive feature needs before it counts in the live fairness differences."""
    quality_window_hours: float = Field(default=168, gt=0, le=24 * 366)
    """How far back labelled predictions count (by the time of the prediction)."""
    max_metric_decay: float = Field(default=0.05, ge=0, le=1)
    """The largest drop of a live metric below the version's own evaluation (rise, for a loss)."""
    fairness: dict[str, float] = Field(
        default_factory=lambda: {"demographic_parity_difference": 0.25, "equalized_odds_difference": 0.25}
    )
    """Limits of the between-group differences on live, labelled predictions."""
    repeat_interval_minutes: float = Field(default=240, gt=0, le=60 * 24 * 30)
    """A firing alert already sent is not sent again within this window."""
    alert_attempts: int = Field(default=4, ge=1, le=10)
    """Tries of one webhook delivery (with backoff) before it goes to the outbox."""
    routes: dict[str, AlertRouteRule] = Field(default_factory=dict)
    """Model name -> owner and alert route; overrides the spec's ``monitoring`` section."""
    default_route: AlertRouteRule | None = None
    """Owner and route of a model that neither ``routes`` nor its spec names."""

    @model_validator(mode="after")
    def _known_fairness_metrics(self) -> MonitoringRules:
        unknown = set(self.fairness) - _FAIRNESS_METRICS
        if unknown:
            raise ValueError(
                f"monitoring.fairness knows demographic_parity_difference and equalized_odds_difference; "
                f"not {', '.join(sorted(unknown))}"
            )
        return self


class CanaryRules(_Strict):
    """The least a canary must do before a version takes more production traffic; a spec may only ask for more.

    ``canary_steps`` below 100 are the steps a canary climbs; at least ``min_steps`` of them, the first
    at most ``max_first_step`` percent. Each step lasts at least ``min_bake_seconds`` and sees at least
    ``min_requests`` canary requests before it is judged.
    """

    min_steps: int = Field(default=1, ge=1, le=20)
    max_first_step: int = Field(default=25, ge=1, le=99)
    min_requests: int = Field(default=100, ge=1)
    min_bake_seconds: float = Field(default=30, ge=0)
    max_error_rate_increase: float = Field(default=0.01, ge=0)
    max_p95_latency_ratio: float = Field(default=1.5, ge=1)


class Policy(_Strict):
    """A validated policy; ``digest`` fingerprints the exact text it came from."""

    version: int = Field(default=1, ge=1, le=1)
    people: dict[str, str] = Field(default_factory=dict)
    """Each person who may sign a request or an approval: name -> Ed25519 public key (OpenSSH line)."""
    approvers: tuple[str, ...] = ()
    """The people (by name, each listed under ``people``) who may approve an action held for approval."""
    approval: ApprovalSettings = ApprovalSettings()
    limits: Limits = Limits()
    tools: ToolRules = ToolRules()
    pii: PiiRules = PiiRules()
    training: TrainingRules = TrainingRules()
    evaluation: EvaluationRules = EvaluationRules()
    monitoring: MonitoringRules = MonitoringRules()
    canary: CanaryRules = CanaryRules()
    source: str = Field(default="built-in default", exclude=True)
    digest: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _people_are_keys(self) -> Policy:
        for name, line in self.people.items():
            if not name.strip():
                raise ValueError("people: a name must not be empty")
            try:
                parse_public_key(line)
            except ValueError as exc:
                raise ValueError(f"people.{name}: {exc}") from None
        seen: dict[str, str] = {}
        for name, line in self.people.items():
            print_ = fingerprint(parse_public_key(line))
            if print_ in seen:
                raise ValueError(
                    f"people: {seen[print_]!r} and {name!r} share one key; a person is a key, so each needs their own"
                )
            seen[print_] = name
        for name in self.approvers:
            if name not in self.people:
                raise ValueError(
                    f"approvers: {name!r} has no public key under people; an approver is a key: run "
                    f"`mlops-supervisor keys init {name}` and add the line it prints under people"
                )
        return self

    def key_fingerprint(self, name: str) -> str | None:
        """The fingerprint of ``name``'s key in this policy, or None when they have none."""
        line = self.people.get(name)
        return fingerprint(parse_public_key(line)) if line is not None else None

    def requires_approval(self, tool: str) -> bool:
        """True when every call of ``tool`` must wait for an approval."""
        return tool in self.approval.required_for


def default_policy_text() -> str:
    """The shipped, documented default policy file."""
    return resources.files("mlops_supervisor.policies").joinpath("default-policy.yaml").read_text("utf-8")


def parse_policy(text: str, source: str) -> Policy:
    """Validate a policy's YAML ``text``; ``source`` names it in messages; ``digest`` is the text's sha256."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"policy file {source} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyFileError(f"policy file {source} must hold a mapping of settings, got {type(data).__name__}")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyFileError(f"policy file {source} is invalid: {describe_validation_error(exc)}") from None
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return policy.model_copy(update={"source": source, "digest": digest})


def load_policy(path: Path | None) -> Policy:
    """Load and validate a policy file; ``None`` gives the shipped default."""
    if path is None:
        return parse_policy(default_policy_text(), "built-in default")
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise PolicyFileError(f"policy file {path} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"policy file {path} cannot be read: {exc}") from None
    return parse_policy(text, str(path))
