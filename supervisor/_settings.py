"""Settings from the environment (prefix ``MLOPS_``) and the command line."""

from __future__ import annotations

import getpass
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "default_user"]


def default_user() -> str:
    """The OS user name, or ``unknown`` where the platform cannot tell."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Settings(BaseSettings):
    """Everything configurable; each field reads ``MLOPS_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    workspace: Path = Field(default=Path(".mlops"), description="where everything the embedded default writes lives")
    user: str = Field(default_factory=default_user, description="who is asking (requester or approver)")
    model: str = Field(default="offline", description="model spec: offline, scripted:PATH or openai:MODEL")
    policy: Path | None = Field(
        default=None, description="policy file; default <workspace>/policy.yaml if present, else the shipped default"
    )
    key: Path | None = Field(
        default=None,
        description="your Ed25519 private key (OpenSSH or PEM); default <config>/mlops-supervisor/keys/<user>",
    )
    allow_model_requests: bool = Field(default=True, description="False refuses every request to a real LLM")
    audit_fsync: bool = Field(default=False, description="fsync the audit log after every line")
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL database (postgresql://USER@HOST:PORT/DB) shared by several hosts for threads, "
        "approvals and the audit chain; default the workspace's own files. Give the password through libpq's "
        "PGPASSWORD or PGPASSFILE (~/.pgpass), which psycopg honours, not in the URL; the URL is never logged "
        "or shown (only host, port and database are)",
    )
    log_level: str = Field(default="WARNING", description="console log level; the JSON log file takes INFO and up")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking and registry store; default sqlite:///<workspace>/mlflow.db. A tracking "
        "server's credentials go in MLflow's own MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
        "MLFLOW_TRACKING_TOKEN), never in the URI (refused)",
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _no_credentials_in_tracking_uri(cls, value: str | None) -> str | None:
        # UsageError is not a ValueError: pydantic lets it through as is (exit 2, one line, no value echoed)
        from mlops_supervisor.tools.core import check_tracking_uri

        return check_tracking_uri(value)

    max_dataset_mb: float = Field(
        default=1024.0, gt=0, description="largest data set a tool loads (file size and size in memory), in MB"
    )
    n_jobs: int | None = Field(default=None, description="parallel jobs for cross-validation (scikit-learn n_jobs)")
    pii_hash_key: SecretStr | None = Field(
        default=None, description="HMAC key for hashed PII columns; default a key kept in the workspace"
    )
    log_payloads: bool = Field(
        default=False, description="include (redacted) tool payloads in debug logs; off by default"
    )
    llm_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="base URL of the OpenAI-compatible LLM server (openai:MODEL); default https://api.openai.com/v1; "
        "its host is on the egress allow-list",
    )
    llm_timeout: float = Field(
        default=60.0, gt=0, description="seconds an LLM request may wait for the server's answer (each attempt)"
    )
    llm_max_retries: int = Field(
        default=3,
        ge=0,
        description="retries of an LLM request answered 408, 409, 429 or 5xx, or not answered in time; "
        "with backoff, honouring Retry-After",
    )
    llm_prices: Path | None = Field(
        default=None,
        description="price table (YAML/JSON: model -> {input, output} USD per million tokens); "
        "the report then shows each request's model cost",
    )
    tracing: bool = Field(
        default=True,
        description="trace every run in MLflow (experiment mlops-supervisor of the tracking store), redacted; "
        "MLOPS_TRACING=0 turns it off",
    )
    slack_webhook_url: SecretStr | None = Field(
        default=None,
        description="Slack incoming-webhook URL that slack:#CHANNEL alert routes post to; its host must be on "
        "MLOPS_EGRESS_ALLOW",
    )
    egress_allow: str = Field(
        default="",
        description="comma-separated destinations this process may also reach (host, host:port, *.domain or a URL), "
        "besides loopback, the MLflow tracking server and the LLM base URL; anything else is refused",
    )
    kubeconfig: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("MLOPS_KUBECONFIG", "KUBECONFIG"),
        description="kubeconfig of the cluster a kubernetes or kserve serving target deploys to (a path, or "
        "KUBECONFIG's list of paths); without one, ~/.kube/config when it exists, else the pod's in-cluster "
        "service account",
    )
    kube_context: str | None = Field(
        default=None, description="the kubeconfig context to use; default the kubeconfig's current context"
    )
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus HTTP API (http://HOST:9090) that the canary analysis of kubernetes and kserve "
        "endpoints reads the routers' metrics from; its host joins the egress allow-list; no credentials in it",
    )

    @field_validator("prometheus_url")
    @classmethod
    def _no_credentials_in_prometheus_url(cls, value: str | None) -> str | None:
        from mlops_supervisor.tools.serving._prometheus import check_prometheus_url

        return None if value is None else check_prometheus_url(value)
