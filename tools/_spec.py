"""The pipeline spec: one YAML file that names the data, the candidates, the gates and the deployment.

Every stage reads the same file. It is validated with pydantic (unknown keys are errors,
so a typo never silently falls back to a default), and ``spec_json_schema()`` gives the
JSON Schema that editors and ``mlops-supervisor spec schema`` show.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.errors import describe_validation_error
from mlops_supervisor.policies.estimators import ALLOWED_ESTIMATORS, Task
from mlops_supervisor.policies.policy import ALERT_ROUTE_KINDS, CanaryRules, check_alert_route
from mlops_supervisor.tools.core._schemas import checked_name

__all__ = [
    "ALERT_ROUTE_KINDS",
    "CLASSIFICATION_METRICS",
    "KSERVE_STORAGE_SCHEMES",
    "REGRESSION_METRICS",
    "SENSITIVITIES",
    "SERVING_TARGETS",
    "WATCHABLE",
    "Candidate",
    "KubernetesServing",
    "MonitoringSpec",
    "PipelineSpec",
    "ServingSpec",
    "check_deployment",
    "load_spec",
    "search_size",
    "spec_json_schema",
]

Scalar = str | int | float | bool | None

CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
_FORMATS = (".csv", ".parquet", ".pq")

Sensitivity = Literal["public", "internal", "confidential", "restricted"]
SENSITIVITIES: tuple[Sensitivity, ...] = ("public", "internal", "confidential", "restricted")
ServingTarget = Literal["local", "kubernetes", "kserve"]
SERVING_TARGETS: tuple[ServingTarget, ...] = ("local", "kubernetes", "kserve")
Watchable = Literal["latency", "errors", "drift", "quality", "bias"]
WATCHABLE: tuple[Watchable, ...] = ("latency", "errors", "drift", "quality", "bias")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(_Strict):
    """Shares of the rows held out for validation and test; the rest trains."""

    validation: float = Field(default=0.15, gt=0, lt=0.5, description="share of rows for validation")
    test: float = Field(default=0.15, gt=0, lt=0.5, description="share of rows for the held-out test")

    @model_validator(mode="after")
    def _leaves_training_rows(self) -> SplitSpec:
        if self.validation + self.test > 0.6:
            raise ValueError(f"validation + test is {self.validation + self.test:.2f}; at most 0.6 may be held out")
        return self


class ChecksSpec(_Strict):
    """Bounds the data validation enforces (hard failures) or reports (warnings)."""

    min_rows: int = Field(default=100, ge=10, description="fewer rows is a hard failure")
    max_rows: int | None = Field(default=None, ge=10, description="more rows is a hard failure")
    min_class_fraction: float = Field(
        default=0.01, gt=0, lt=0.5, description="a target class rarer than this is a hard failure"
    )
    max_missing_fraction: float = Field(
        default=0.5, gt=0, le=1, description="a column missing more than this is reported"
    )


class DataSpec(_Strict):
    """Where the data comes from and what it predicts."""

    source: str = Field(description="a CSV or Parquet path (relative to the spec file) or sklearn:NAME")
    target: str = Field(min_length=1, description="the column to predict")
    positive_class: Scalar = Field(default=None, description="binary classification: the class scored as positive")
    sensitive_features: tuple[str, ...] = Field(default=(), description="columns the fairness checks group by")
    drop_columns: tuple[str, ...] = Field(default=(), description="columns removed before anything else")
    sensitivity: Sensitivity | None = Field(
        default=None,
        description="how sensitive the data is: public, internal, confidential or restricted; "
        "asked for before a deploy when not given",
    )
    split: SplitSpec = SplitSpec()
    checks: ChecksSpec = ChecksSpec()

    @field_validator("source")
    @classmethod
    def _known_format(cls, source: str) -> str:
        if source.startswith("sklearn:"):
            if not source.removeprefix("sklearn:"):
                raise ValueError("sklearn: needs a data set name, e.g. sklearn:breast_cancer")
            return source
        if Path(source).suffix.lower() not in _FORMATS:
            raise ValueError(
                f"unknown data format {Path(source).suffix or '(none)'!r} of {source!r}; allowed: "
                ".csv, .parquet, .pq or sklearn:NAME"
            )
        return source


class Candidate(_Strict):
    """One allow-listed estimator with fixed parameters and a search space."""

    name: str = Field(description="a short name for the candidate's runs")
    estimator: str = Field(description="import path from the allow-list, e.g. sklearn.linear_model.LogisticRegression")
    params: dict[str, Scalar] = Field(default_factory=dict, description="fixed parameters")
    search_space: dict[str, list[Scalar]] = Field(
        default_factory=dict, description="parameter -> values to try (grid) or sample from (random)"
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        return checked_name("candidate", name)

    @field_validator("estimator")
    @classmethod
    def _allow_listed(cls, estimator: str) -> str:
        if estimator not in ALLOWED_ESTIMATORS:
            raise ValueError(
                f"estimator {estimator!r} is not on the allow-list; allowed: {', '.join(sorted(ALLOWED_ESTIMATORS))}"
            )
        return estimator

    @field_validator("search_space")
    @classmethod
    def _non_empty_lists(cls, space: dict[str, list[Scalar]]) -> dict[str, list[Scalar]]:
        for key, values in space.items():
            if not values:
                raise ValueError(f"search_space.{key} is empty; give at least one value")
        return space


class SearchSpec(_Strict):
    """How each candidate's search space is explored."""

    strategy: Literal["grid", "random"] = "grid"
    n_iter: int = Field(default=10, ge=1, description="random search: combinations sampled per candidate")
    cv_folds: int = Field(default=3, ge=2, le=10, description="cross-validation folds")


class TrainingSpec(_Strict):
    """The candidates and how the best one is chosen."""

    task: Task = "classification"
    metric: str = Field(default="roc_auc", description="the metric that picks the best candidate (validation split)")
    search: SearchSpec = SearchSpec()
    use_sensitive_features: bool = Field(
        default=False, description="train on the sensitive features too (they are always kept for fairness checks)"
    )
    candidates: tuple[Candidate, ...] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        metrics = CLASSIFICATION_METRICS if self.task == "classification" else REGRESSION_METRICS
        if self.metric not in metrics:
            raise ValueError(f"metric {self.metric!r} does not fit task {self.task}; allowed: {', '.join(metrics)}")
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique; got {', '.join(names)}")
        for candidate in self.candidates:
            if ALLOWED_ESTIMATORS[candidate.estimator] != self.task:
                raise ValueError(
                    f"candidate {candidate.name!r}: {candidate.estimator} is a "
                    f"{ALLOWED_ESTIMATORS[candidate.estimator]} estimator, the task is {self.task}"
                )
        return self


class ChampionComparison(_Strict):
    """How much a challenger must beat the current champion by."""

    min_absolute_improvement: float = Field(default=0.0, ge=0)
    min_relative_improvement: float = Field(default=0.0, ge=0)


class EvaluationSpec(_Strict):
    """The evaluation gate: metric floors, fairness limits and the champion comparison."""

    thresholds: dict[str, float] = Field(default_factory=dict, description="metric -> the value it must reach")
    fairness: dict[str, float] = Field(
        default_factory=dict, description="fairness metric -> the largest difference allowed between groups"
    )
    champion: ChampionComparison = ChampionComparison()
    max_age_hours: float = Field(default=24, gt=0, description="an evaluation older than this no longer counts")


class ModelSpec(_Strict):
    """The registered model the pipeline produces."""

    name: str = Field(description="registered model name in MLflow")

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        return checked_name("model", name)


class CanaryAnalysisSpec(_Strict):
    """When a canary counts as healthy enough to take more traffic."""

    window_seconds: float = Field(default=30, gt=0)
    min_requests: int = Field(default=100, ge=1)
    max_error_rate_increase: float = Field(default=0.01, ge=0)
    max_p95_latency_ratio: float = Field(default=1.5, ge=1)


class DeploymentSpec(_Strict):
    """How a version reaches traffic: the canary steps it climbs and how each step is judged.

    A canary climbs the steps below 100; passing the last of them holds that share until
    ``promote_model`` (the champion gate) takes it to 100. The policy's ``canary`` section sets
    the least these may ask for (``check_deployment``).
    """

    canary_steps: tuple[int, ...] = Field(default=(10, 50, 100), min_length=1)
    analysis: CanaryAnalysisSpec = CanaryAnalysisSpec()

    @field_validator("canary_steps")
    @classmethod
    def _rising_percentages(cls, steps: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"canary_steps must rise strictly within 1..100 and end at 100; got {list(steps)}")
        return steps

    @property
    def canary_weights(self) -> list[int]:
        """The traffic shares a canary climbs: the steps below 100."""
        return [s for s in self.canary_steps if s < 100]


KSERVE_STORAGE_SCHEMES = ("s3", "gs", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf")
"""The ``storageUri`` schemes KServe's storage initializer downloads from (``models:/`` and ``runs:/`` are MLflow's own)."""
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class KubernetesServing(_Strict):
    """Where and how a ``kubernetes`` or ``kserve`` target serves: namespace, image or storage, replicas, timeouts."""

    namespace: str = Field(default="default", description="the namespace the endpoint's objects live in")
    image: str | None = Field(
        default=None,
        description="target kubernetes: the container image of this package (router and model servers), "
        "built from deploy/kubernetes/Dockerfile",
    )
    replicas: int = Field(default=1, ge=1, le=100, description="pods per version (and of the router)")
    storage_uri: str | None = Field(
        default=None,
        description="target kserve: where a version's MLflow model directory lives, with {model} and {version}, "
        "e.g. s3://models/{model}/{version}",
    )
    deployment_mode: Literal["Knative", "Standard"] = Field(
        default="Knative", description="target kserve: KServe's deployment mode (Knative is its Serverless mode)"
    )
    kserve_version: str = Field(
        default="0.20",
        description="target kserve: the cluster's KServe version, MAJOR.MINOR (Standard canaries need 0.20+)",
    )
    ready_timeout_s: float = Field(
        default=300, gt=0, le=3600, description="how long a rollout may take to become ready before it is rolled back"
    )

    @field_validator("namespace")
    @classmethod
    def _dns_label(cls, namespace: str) -> str:
        if not _DNS_LABEL.match(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be a DNS-1123 label: 1-63 lower-case letters, digits or '-', "
                "starting and ending with a letter or digit"
            )
        return namespace

    @field_validator("image")
    @classmethod
    def _image(cls, image: str | None) -> str | None:
        if image is not None and (not image or any(c.isspace() for c in image)):
            raise ValueError(f"image {image!r} must be a container image reference, e.g. registry/mlops-supervisor:1.0")
        return image

    @field_validator("storage_uri")
    @classmethod
    def _storage(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
        if "://" not in uri or scheme not in KSERVE_STORAGE_SCHEMES:
            raise ValueError(
                f"storage_uri {uri!r} must use a scheme KServe's storage initializer downloads from "
                f"({', '.join(s + '://' for s in KSERVE_STORAGE_SCHEMES)}); models:/ and runs:/ are MLflow's "
                "own URIs, which KServe cannot read: copy the version's model there and name that place"
            )
        fields = {name for _, name, _, _ in string.Formatter().parse(uri) if name is not None}
        if not fields <= {"model", "version"} or "version" not in fields:
            raise ValueError(
                f"storage_uri {uri!r} must contain {{version}} (and may contain {{model}}), no other placeholder: "
                "each version is served from its own copy"
            )
        return uri

    @field_validator("kserve_version")
    @classmethod
    def _version(cls, version: str) -> str:
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", version):
            raise ValueError(f"kserve_version {version!r} must be MAJOR.MINOR, e.g. 0.20")
        return version

    @property
    def standard_canaries(self) -> bool:
        """Whether this KServe serves a canary in Standard mode: its ``spec.canary`` list came in 0.20."""
        major, minor = (int(p) for p in self.kserve_version.split(".")[:2])
        return (major, minor) >= (0, 20)


class ServingSpec(_Strict):
    """Where the model is served and the latency it must keep; asked for before a deploy when not given."""

    target: ServingTarget | None = Field(
        default=None,
        description="where the endpoint runs: local (model servers and a router on this machine), "
        "kubernetes (a Deployment and Service per version behind this project's router) or "
        "kserve (a KServe InferenceService); the last two need the kubernetes section",
    )
    latency_p95_ms: float | None = Field(
        default=None, gt=0, le=600_000, description="the 95th-percentile latency goal of a prediction, in ms"
    )
    kubernetes: KubernetesServing | None = Field(
        default=None, description="targets kubernetes and kserve: namespace, image or storage, replicas, timeouts"
    )

    @model_validator(mode="after")
    def _target_needs(self) -> ServingSpec:
        kube = self.kubernetes
        if self.target == "kubernetes" and (kube is None or kube.image is None):
            raise ValueError(
                "serving.target kubernetes needs serving.kubernetes.image: the image of this package that runs the "
                "router and the model servers (deploy/kubernetes/Dockerfile builds it)"
            )
        if self.target == "kserve" and (kube is None or kube.storage_uri is None):
            raise ValueError(
                "serving.target kserve needs serving.kubernetes.storage_uri: where KServe downloads a version's "
                "MLflow model from, e.g. s3://models/{model}/{version}"
            )
        return self


class MonitoringSpec(_Strict):
    """What is watched once the model serves, and who hears about it; asked for before monitoring when not given."""

    watch: tuple[Watchable, ...] = Field(
        default=(),
        description="what to watch: any of latency, errors, drift, quality and bias (all of them when empty)",
    )
    owner: str | None = Field(default=None, min_length=1, description="the person who owns the model in production")
    alert: str | None = Field(
        default=None,
        description="where alerts go: log (the workspace's alert log), email:ADDRESS, slack:#CHANNEL or "
        "webhook:https://HOST/PATH",
    )

    @field_validator("watch")
    @classmethod
    def _once_each(cls, watch: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(watch)) != len(watch):
            raise ValueError(f"watch names something twice: {list(watch)}")
        return watch

    @field_validator("alert")
    @classmethod
    def _route(cls, alert: str | None) -> str | None:
        return None if alert is None else check_alert_route(alert)


def check_deployment(deployment: DeploymentSpec, rules: CanaryRules) -> list[str]:
    """What in ``deployment`` asks for less than the policy's canary minimums ``rules``; empty when nothing.

    Each problem names the field, its value and what the policy allows. A spec may only tighten
    the policy: a looser value is refused, never quietly replaced by the policy's.
    """
    steps, analysis = deployment.canary_weights, deployment.analysis
    problems = []
    if len(steps) < rules.min_steps:
        problems.append(
            f"deployment.canary_steps {list(deployment.canary_steps)} has {len(steps)} step(s) below 100; "
            f"the policy asks for at least {rules.min_steps} (canary.min_steps)"
        )
    if steps and steps[0] > rules.max_first_step:
        problems.append(
            f"deployment.canary_steps starts at {steps[0]} %; the policy allows a first step of at most "
            f"{rules.max_first_step} % (canary.max_first_step)"
        )
    for field, value, bound, wanted in (
        ("min_requests", analysis.min_requests, rules.min_requests, "at least"),
        ("window_seconds", analysis.window_seconds, rules.min_bake_seconds, "at least"),
        ("max_error_rate_increase", analysis.max_error_rate_increase, rules.max_error_rate_increase, "at most"),
        ("max_p95_latency_ratio", analysis.max_p95_latency_ratio, rules.max_p95_latency_ratio, "at most"),
    ):
        if (value < bound) if wanted == "at least" else (value > bound):
            key = "min_bake_seconds" if field == "window_seconds" else field
            problems.append(
                f"deployment.analysis.{field} is {value:g}; the policy asks for {wanted} {bound:g} (canary.{key})"
            )
    return problems


class PipelineSpec(_Strict):
    """A whole pipeline: data, training, evaluation gate, registered model, deployment, serving and monitoring."""

    version: Literal[1] = 1
    name: str = Field(description="pipeline name; also the MLflow experiment unless 'experiment' is set")
    use_case: str | None = Field(
        default=None,
        min_length=3,
        max_length=500,
        description="what the model is for, in a sentence; the report's Plan restates it; asked for before a "
        "deploy when not given",
    )
    experiment: str | None = Field(default=None, description="MLflow experiment name")
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="seed of the split, the search and the estimators")
    data: DataSpec
    training: TrainingSpec
    evaluation: EvaluationSpec = EvaluationSpec()
    model: ModelSpec
    deployment: DeploymentSpec = DeploymentSpec()
    serving: ServingSpec = Field(
        default=ServingSpec(), description="where the model is served and its latency goal (needed to deploy)"
    )
    monitoring: MonitoringSpec = Field(
        default=MonitoringSpec(), description="what is watched and who is alerted (needed to monitor)"
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, name: str) -> str:
        return checked_name("pipeline", name)

    @model_validator(mode="after")
    def _canaries_servable(self) -> PipelineSpec:
        kube = self.serving.kubernetes
        steps = self.deployment.canary_weights
        old_standard = kube is not None and kube.deployment_mode == "Standard" and not kube.standard_canaries
        if self.serving.target == "kserve" and old_standard and steps:
            assert kube is not None
            raise ValueError(
                f"serving.kubernetes: KServe {kube.kserve_version} in Standard mode ignores canaryTrafficPercent "
                f"(its spec.canary list came in 0.20), so the canary steps {steps} would send all traffic to the "
                "new version at once; use deployment_mode Knative, upgrade KServe to 0.20+ and set "
                "kserve_version, or set deployment.canary_steps to [100]"
            )
        return self

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment the runs go to."""
        return self.experiment or self.name


def search_size(candidate: Candidate, search: SearchSpec) -> int:
    """How many parameter combinations the search tries for ``candidate``."""
    grid = math.prod(len(v) for v in candidate.search_space.values()) if candidate.search_space else 1
    return grid if search.strategy == "grid" else min(grid, search.n_iter)


class LoadedSpec(BaseModel):
    """A validated spec plus where it came from: its path, its text's digest and its raw text."""

    model_config = ConfigDict(frozen=True)

    spec: PipelineSpec
    path: Path
    digest: str
    text: str

    def resolve_source(self) -> str:
        """The data source, with a relative path taken from the spec file's directory."""
        source = self.spec.data.source
        if source.startswith("sklearn:") or Path(source).is_absolute():
            return source
        return str((self.path.parent / source).resolve())


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate a pipeline spec; ``InvalidInputError`` names every problem."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise InvalidInputError("spec_not_found", f"pipeline spec {path} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise InvalidInputError("spec_unreadable", f"pipeline spec {path} cannot be read: {exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInputError("spec_invalid", f"pipeline spec {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInputError("spec_invalid", f"pipeline spec {path} must be a YAML mapping")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(
            "spec_invalid", f"pipeline spec {path} is invalid: {describe_validation_error(exc, show_input=False)}"
        ) from None
    return LoadedSpec(spec=spec, path=path, digest=hashlib.sha256(text.encode("utf-8")).hexdigest(), text=text)


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline spec file."""
    schema = PipelineSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlops-supervisor pipeline spec"
    return schema
