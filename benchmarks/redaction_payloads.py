"""Build the MLOps payload corpus the redaction benchmark and tests read: benchmarks/data/redaction_payloads.json.

Each payload is what a boundary of this project sees: tool results (metrics and params JSON,
MLflow run and model-version records, evaluation reports, drift tables, data profiles,
Kubernetes status, router samples, audit lines) as JSON values, and log lines and config
files (YAML, .env, INI, docker-compose, a service-account key) as text. Into them go planted
secrets (every credential shape the redactor claims) and personal data, each listed with its
value and entity; and each payload lists the benign identifiers it holds (run, model and thread
ids, digests, signatures, versions, image tags, Kubernetes names, paths, timestamps, floats,
metric and parameter names) that must come out of redaction unchanged.

Fixed seed, so the file is the same on every run: python benchmarks/redaction_payloads.py
"""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "data" / "redaction_payloads.json"

FIRST = ["Margaret", "Daniel", "Priya", "Tomasz", "Aisha", "Kenji", "Lucia", "Oluwaseun", "Ingrid", "Mateo"]
LAST = [
    "Okonkwo",
    "Fischer",
    "Raghunathan",
    "Kowalczyk",
    "Haddad",
    "Tanaka",
    "Moreau",
    "Adeyemi",
    "Lindqvist",
    "Herrera",
]


class World:
    """One variant's secrets, personal data and identifiers (fresh random values per seed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        first, last = rng.sample(FIRST, 3), rng.sample(LAST, 3)
        self.secrets: dict[str, tuple[str, str]] = {
            "aws_access_key_id": ("API_KEY", "AKIA" + self._alnum(16, string.ascii_uppercase + "234567")),
            "aws_secret_access_key": ("SECRET", self._b64(40)),
            "github_pat": ("API_KEY", "ghp_" + self._alnum(36)),
            "github_short": ("API_KEY", "ghp_" + self._alnum(20)),
            "github_fine_grained": ("API_KEY", "github_pat_" + self._alnum(22) + "_" + self._alnum(59)),
            "gitlab_pat_long": ("API_KEY", "glpat-" + self._alnum(20) + "-" + self._alnum(27, string.ascii_letters + string.digits + "_")),
            "slack_bot": ("API_KEY", f"xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-{self._alnum(24)}"),
            "slack_webhook": ("SECRET", f"T{self._alnum(8, string.ascii_uppercase + string.digits)}/B{self._alnum(10, string.ascii_uppercase + string.digits)}/{self._alnum(24)}"),
            "openai_project": ("API_KEY", "sk-proj-" + self._alnum(48, string.ascii_letters + string.digits + "_-")),
            "anthropic": ("API_KEY", "sk-ant-api03-" + self._alnum(93, string.ascii_letters + string.digits + "_-") + "AA"),
            "huggingface": ("API_KEY", "hf_" + self._alnum(34, string.ascii_letters)),
            "databricks": ("API_KEY", "dapi" + self._hex(32)),
            "jwt": ("JWT", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJjaS1ib3QiLCJpYXQiOjE3MzMwNTAwMDB9." + self._alnum(43, string.ascii_letters + string.digits + "_-")),
            "bearer": ("SECRET", self._alnum(40, string.ascii_letters + string.digits + "._-")),
            "basic_auth": ("SECRET", base64.b64encode(f"ci-bot:{self._alnum(12)}".encode()).decode()),
            "azure_account_key": ("SECRET", self._b64(86) + "=="),
            "azure_sas_sig": ("SECRET", self._b64(43).replace("+", "%2B").replace("/", "%2F") + "%3D"),
            "gcp_private_key_body": ("PRIVATE_KEY", self._b64(64)),
            "rsa_key_no_end_body": ("PRIVATE_KEY", self._b64(64)),
            "postgres_password": ("SECRET", "Pg-" + self._alnum(14)),
            "redis_password": ("SECRET", self._alnum(18)),
            "db_password": ("SECRET", "hunter2-" + self._alnum(6)),
            "client_secret": ("SECRET", self._alnum(32)),
            "mlflow_tracking_password": ("SECRET", "mlf-" + self._alnum(12)),
            "api_key_json": ("SECRET", self._hex(32)),
            "stripe": ("API_KEY", "sk_live_" + self._alnum(24)),
            "google_api": ("API_KEY", "AIza" + self._alnum(35, string.ascii_letters + string.digits + "_-")),
            "smtp_password_yaml": ("SECRET", f"Winter{rng.randrange(2020, 2030)}!{self._alnum(2)}"),
            "registry_token": ("SECRET", self._alnum(36)),
        }  # fmt: skip
        self.pii: dict[str, tuple[str, str]] = {
            "owner_name": ("PERSON", f"{first[0]} {last[0]}"),
            "reviewer_name": ("PERSON", f"{first[1]} {last[1]}"),
            "requester_name": ("PERSON", f"{first[2]} {last[2]}"),
            "owner_email": ("EMAIL_ADDRESS", f"{first[0].lower()}.{last[0].lower()}@acme-analytics.com"),
            "oncall_phone": ("PHONE_NUMBER", f"+1 415 555 {rng.randrange(100, 200):04d}"),
            "customer_phone": ("PHONE_NUMBER", f"(212) 555-{rng.randrange(100, 200):04d}"),
            "customer_iban": ("IBAN_CODE", "DE89370400440532013000"),
            "customer_ssn": ("US_SSN", f"078-05-{rng.randrange(1000, 9999)}"),
            "client_ip": ("IP_ADDRESS", f"203.0.113.{rng.randrange(2, 250)}"),
            "customer_card": ("CREDIT_CARD", "4111 1111 1111 1111"),
            "customer_email": ("EMAIL_ADDRESS", f"j.{last[1].lower()}@example.org"),
        }
        self.run_id, self.child_run, self.parent_run = self._hex(32), self._hex(32), self._hex(32)
        self.model_id, self.model_id_2 = "m-" + self._hex(32), "m-" + self._hex(32)
        self.thread_id = "t-" + self._hex(12)
        self.git_sha = self._hex(40)
        self.digest = "sha256:" + self._hex(64)
        self.key_fp = "sha256:" + self._hex(64)
        self.signature, self.request_signature = self._hex(128), self._hex(128)
        self.uuid = self._uuid()
        self.pod = f"churn-classifier-v3-{self._hex(9)}-{self._alnum(5, string.ascii_lowercase + string.digits)}"
        self.image = f"ghcr.io/acme/churn-classifier:v3.1.{rng.randrange(0, 9)}@sha256:{self._hex(64)}"
        self.float_1 = repr(rng.uniform(0.85, 0.99))
        self.float_2 = repr(rng.uniform(0.3, 0.5))
        self.float_3 = repr(rng.uniform(0.0001, 0.001))
        self.version = str(rng.randrange(2, 40))

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def _alnum(self, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def _b64(self, n: int) -> str:
        return self._alnum(n, string.ascii_letters + string.digits + "+/")

    def _uuid(self) -> str:
        h = self._hex(32)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _metrics_payload(w: World) -> dict[str, Any]:
    return {
        "run_id": w.run_id,
        "metrics": {"roc_auc": float(w.float_1), "f1": 0.8123, "log_loss": 0.3321, "precision_at_k": float(w.float_2)},
        "step": 3,
        "timestamp": 1733050000123,
    }


def _params_payload(w: World) -> dict[str, Any]:
    return {
        "run_id": w.child_run,
        "params": {
            "estimator": "LogisticRegression",
            "max_depth": "6",
            "learning_rate": "0.05",
            "n_estimators": "200",
            "class_weight": "balanced",
            "random_state": "42",
            "max_tokens": "256",
            "pad_token": "[PAD]",
            "sort_key": "created_at",
        },
    }


def _run_record(w: World) -> dict[str, Any]:
    return {
        "info": {
            "run_id": w.run_id,
            "experiment_id": "1",
            "run_name": "bustling-fox-123",
            "status": "FINISHED",
            "start_time": 1733050000123,
            "end_time": 1733050093456,
            "artifact_uri": f"mlflow-artifacts:/1/{w.run_id}/artifacts",
            "lifecycle_stage": "active",
        },
        "data": {
            "metrics": [
                {"key": "roc_auc", "value": float(w.float_1), "step": 0},
                {"key": "val_loss", "value": float(w.float_3)},
            ],
            "params": [
                {"key": "max_depth", "value": "6"},
                {"key": "db_password", "value": w.secrets["db_password"][1]},
                {"key": "learning_rate", "value": "0.05"},
            ],
            "tags": [
                {"key": "mlflow.source.git.commit", "value": w.git_sha},
                {"key": "mlflow.parentRunId", "value": w.parent_run},
                {"key": "mlops.data.digest", "value": w.digest},
                {
                    "key": "mlflow.note.content",
                    "value": f"Baseline refit requested by {w.pii['requester_name'][1]} after the drift alert.",
                },
            ],
        },
    }


def _model_version(w: World) -> dict[str, Any]:
    return {
        "name": "churn-classifier",
        "version": "3",
        "run_id": w.run_id,
        "model_id": w.model_id,
        "source": f"models:/{w.model_id}",
        "aliases": ["champion"],
        "status": "READY",
        "creation_timestamp": "2026-11-29T12:00:01.123Z",
        "description": (
            f"Gradient boosting churn model owned by {w.pii['owner_name'][1]} ({w.pii['owner_email'][1]}); "
            f"questions to the on-call line {w.pii['oncall_phone'][1]}."
        ),
        "tags": {
            "mlops.evaluation.digest": w.digest,
            "mlops.policy": "sha256:" + w._hex(64),
            "previous_model": w.model_id_2,
        },
    }


def _evaluation_report(w: World) -> dict[str, Any]:
    return {
        "model": "churn-classifier",
        "version": "3",
        "thresholds": {"roc_auc": 0.85, "f1": 0.7},
        "scores": {"roc_auc": float(w.float_1), "f1": 0.8123, "brier_score": 0.1187},
        "fairness": {
            "sensitive_feature": "sex",
            "demographic_parity_difference": 0.0412,
            "equalized_odds_difference": 0.0633,
        },
        "champion": {"model_id": w.model_id_2, "roc_auc": 0.9412},
        "evidence_digest": w.digest,
        "passed": True,
        "notes": "Jensen-Shannon distance and Wasserstein distance are within bounds; Adam was not used.",
    }


def _drift_table(w: World) -> dict[str, Any]:
    return {
        "reference": "data/adult/v2/reference.parquet",
        "current": "data/adult/v3/current.parquet",
        "columns": [
            {"column": "age", "psi": 0.9710325, "ks_statistic": 0.2160443, "p_value": 0.0, "drifted": True},
            {
                "column": "hours-per-week",
                "psi": float(w.float_3),
                "ks_statistic": 0.0123,
                "p_value": float(w.float_1),
                "drifted": False,
            },
            {"column": "native-country", "psi": 0.0001, "chi2_p_value": 0.8812, "drifted": False},
        ],
        "computed_at": "2026-11-29T12:00:05+00:00",
    }


def _profile(w: World) -> dict[str, Any]:
    return {
        "rows": 39073,
        "columns": {
            "occupation": {
                "kind": "categorical",
                "shares": {"Exec-managerial": 0.1251, "Prof-specialty": 0.1263, "Craft-repair": 0.1249},
            },
            "native-country": {
                "kind": "categorical",
                "shares": {"United-States": 0.8974, "Mexico": 0.0195, "Philippines": 0.0061},
            },
            "workclass": {"kind": "categorical", "shares": {"Self-emp-not-inc": 0.0791, "State-gov": 0.0406}},
            "age": {"kind": "numeric", "mean": 38.6435, "std": 13.7105},
            "note": {"kind": "text", "shares": {f"call me at {w.pii['customer_phone'][1]}": 0.0001}},
        },
    }


def _k8s_status(w: World) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "churn-classifier-v3",
            "namespace": "ml-serving",
            "uid": w.uuid,
            "resourceVersion": "184467",
            "generation": 4,
            "labels": {"app.kubernetes.io/name": "churn-classifier", "mlops/model-version": "3"},
            "annotations": {"mlops/model-id": w.model_id, "deployment.kubernetes.io/revision": "4"},
        },
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": w.image,
                            "env": [
                                {"name": "MLFLOW_TRACKING_URI", "value": "http://127.0.0.1:5000"},
                                {"name": "MLFLOW_TRACKING_PASSWORD", "value": w.secrets["mlflow_tracking_password"][1]},
                                {"name": "MODEL_URI", "value": f"models:/{w.model_id}"},
                            ],
                            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                        }
                    ],
                    "imagePullSecrets": [{"name": "ghcr-pull-secret"}],
                }
            },
        },
        "status": {
            "replicas": 2,
            "readyReplicas": 2,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "lastTransitionTime": "2026-11-29T12:00:07Z",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                }
            ],
            "pods": [{"name": w.pod, "phase": "Running", "containerID": "containerd://" + w._hex(64)}],
        },
    }


def _router_sample(w: World) -> dict[str, Any]:
    return {
        "endpoint": "production",
        "records": [
            {
                "age": 39,
                "workclass": "State-gov",
                "education": "Bachelors",
                "hours-per-week": 40,
                "note": f"wire refund to {w.pii['customer_iban'][1]}",
            },
            {"age": 50, "workclass": "Self-emp-not-inc", "education": "HS-grad", "hours-per-week": 13, "note": ""},
        ],
        "predictions": [0, 1],
        "latency_ms": 1.0912,
        "model_id": w.model_id,
    }


def _audit_line(w: World) -> dict[str, Any]:
    return {
        "seq": 42,
        "event": "decision",
        "thread_id": w.thread_id,
        "tool": "promote_model",
        "decision": {"kind": "needs_approval", "reason_code": "approval_required"},
        "request_signed": {
            "statement": f"request:{w.thread_id}:promote_model",
            "signer": "alice",
            "key": w.key_fp,
            "signature": w.request_signature,
        },
        "approval_signed": {
            "statement": f"approve:{w.thread_id}:churn-classifier:3",
            "signer": "bob",
            "key": w.key_fp,
            "signature": w.signature,
        },
        "prev": w.digest,
        "at": "2026-11-29T12:00:09.513402+00:00",
    }


def _gcp_key(w: World) -> dict[str, Any]:
    body = w.secrets["gcp_private_key_body"][1]
    return {
        "type": "service_account",
        "project_id": "acme-ml-prod",
        "private_key_id": w._hex(40),
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{body}\n{w._b64(64)}\n-----END PRIVATE KEY-----\n",
        "client_email": "mlops-deployer@acme-ml-prod.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


def _tool_args(w: World) -> dict[str, Any]:
    return {
        "tool": "register_dataset",
        "args": {
            "source": "/workspace/data/exports/churn@2x/customers.parquet",
            "name": "churn-customers",
            "options": {"api_key": w.secrets["api_key_json"][1], "client_secret": w.secrets["client_secret"][1]},
        },
    }


def _log_lines(w: World) -> str:
    s = w.secrets
    return "\n".join(
        [
            f"2026-11-29T12:00:01.123Z INFO mlops_supervisor.tools.training run {w.run_id} logged roc_auc={w.float_1} max_depth=6",
            f"2026-11-29T12:00:02.004Z INFO mlops_supervisor.tools.registry registered churn-classifier version 3 as {w.model_id}",
            f"2026-11-29T12:00:03.517Z WARN mlops_supervisor.tools.serving pod {w.pod} restarted (image {w.image})",
            f"2026-11-29T12:00:04.220Z INFO router request from {w.pii['client_ip'][1]} to /invocations took 1.09 ms",
            f"2026-11-29T12:00:05.001Z DEBUG http GET https://api.internal/v1/models Authorization: Bearer {s['bearer'][1]}",
            f"2026-11-29T12:00:05.990Z ERROR deploy failed: could not connect to postgres://mlflow:{s['postgres_password'][1]}@db.internal:5432/mlflow",
            f"2026-11-29T12:00:06.100Z INFO approval requested by {w.pii['reviewer_name'][1]} on thread {w.thread_id}",
            f"2026-11-29T12:00:06.400Z INFO notifying https://hooks.slack.com/services/{s['slack_webhook'][1]}",
            f"2026-11-29T12:00:07.001Z DEBUG env AWS_ACCESS_KEY_ID={s['aws_access_key_id'][1]} AWS_SECRET_ACCESS_KEY={s['aws_secret_access_key'][1]}",
            f"2026-11-29T12:00:07.500Z INFO checkpoint written to /workspace/.mlops/checkpoints/{w.thread_id}.sqlite",
            f"2026-11-29T12:00:08.000Z DEBUG curl -H 'Authorization: Basic {s['basic_auth'][1]}' https://registry.internal/v2/",
            "2026-11-29T12:00:08.300Z INFO drift on age: psi=0.9710325 ks=0.2160443 p=0.0 (Jensen-Shannon 0.41)",
            f"2026-11-29T12:00:09.000Z INFO customer ticket: card {w.pii['customer_card'][1]}, ssn {w.pii['customer_ssn'][1]}, email {w.pii['customer_email'][1]}",
        ]
    )


def _env_file(w: World) -> str:
    s = w.secrets
    return "\n".join(
        [
            "# .env for the training job",
            "MLFLOW_TRACKING_URI=http://127.0.0.1:5000",
            "MLFLOW_TRACKING_USERNAME=ci-bot",
            f"MLFLOW_TRACKING_PASSWORD={s['mlflow_tracking_password'][1]}",
            f"DB_PASSWORD={s['db_password'][1]}",
            f"OPENAI_API_KEY={s['openai_project'][1]}",
            f"ANTHROPIC_API_KEY={s['anthropic'][1]}",
            f"HF_TOKEN={s['huggingface'][1]}",
            f"GITHUB_TOKEN={s['github_pat'][1]}",
            f"GITLAB_TOKEN={s['gitlab_pat_long'][1]}",
            f"SLACK_BOT_TOKEN={s['slack_bot'][1]}",
            f"DATABRICKS_TOKEN={s['databricks'][1]}",
            f"STRIPE_KEY={s['stripe'][1]}",
            f"GOOGLE_API_KEY={s['google_api'][1]}",
            f"REDIS_URL=redis://:{s['redis_password'][1]}@cache.internal:6379/0",
            "MODEL_NAME=churn-classifier",
            f"w.model_id={w.model_id}",
            "LOG_LEVEL=INFO",
        ]
    )


def _yaml_config(w: World) -> str:
    s = w.secrets
    return f"""# pipeline spec
name: churn-classifier
owner: {w.pii["owner_name"][1]}
data:
  source: /workspace/data/adult/v3/train.parquet
  target: class
  sensitive_features: [sex, race]
training:
  estimator: sklearn.ensemble.GradientBoostingClassifier
  params:
    max_depth: 6
    learning_rate: 0.05
    subsample: {w.float_2}
notify:
  smtp_host: smtp.internal
  smtp_password: "{s["smtp_password_yaml"][1]}"
  github_token: {s["github_short"][1]}
registry:
  credentials:
    secure: {s["registry_token"][1]}
serving:
  image: {w.image}
  replicas: 2
  canary: [10, 50]
azure:
  connection_string: "DefaultEndpointsProtocol=https;AccountName=acmeml;AccountKey={s["azure_account_key"][1]};EndpointSuffix=core.windows.net"
  sas_url: "https://acmeml.blob.core.windows.net/models?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-31T00:00:00Z&sig={s["azure_sas_sig"][1]}"
"""


def _ini_config(w: World) -> str:
    return f"""[ci]
workflow = train-and-evaluate
fine_grained_token = {w.secrets["github_fine_grained"][1]}
runner = ubuntu-24.04

[deploy]
key = -----BEGIN RSA PRIVATE KEY-----
    {w.secrets["rsa_key_no_end_body"][1]}
    {w._b64(64)}
session = {w.secrets["jwt"][1]}
"""


def payloads(w: World) -> list[dict[str, Any]]:
    """One variant of the corpus: each payload with its kind, value, planted secrets and PII, and benign identifiers."""
    s, p = w.secrets, w.pii
    out: list[dict[str, Any]] = [
        {"name": "metrics", "kind": "json", "value": _metrics_payload(w), "secrets": [], "pii": [],
         "benign": [w.run_id, w.float_1, w.float_2, "roc_auc", "log_loss", "precision_at_k"]},
        {"name": "params", "kind": "json", "value": _params_payload(w), "secrets": [], "pii": [],
         "benign": [w.child_run, "LogisticRegression", "max_depth", "learning_rate", "class_weight", "max_tokens", "[PAD]", "created_at"]},
        {"name": "run-record", "kind": "json", "value": _run_record(w), "secrets": ["db_password"], "pii": ["requester_name"],
         "benign": [w.run_id, f"mlflow-artifacts:/1/{w.run_id}/artifacts", "bustling-fox-123", w.git_sha, w.parent_run, w.digest, w.float_1, w.float_3, "mlflow.source.git.commit", "mlflow.parentRunId", "val_loss"]},
        {"name": "model-version", "kind": "json", "value": _model_version(w), "secrets": [], "pii": ["owner_name", "owner_email", "oncall_phone"],
         "benign": [w.model_id, w.model_id_2, f"models:/{w.model_id}", "2026-11-29T12:00:01.123Z", w.digest, "churn-classifier", "champion"]},
        {"name": "evaluation-report", "kind": "json", "value": _evaluation_report(w), "secrets": [], "pii": [],
         "benign": [w.model_id_2, w.digest, w.float_1, "demographic_parity_difference", "equalized_odds_difference", "brier_score", "Jensen-Shannon", "Wasserstein", "Adam"]},
        {"name": "drift-table", "kind": "json", "value": _drift_table(w), "secrets": [], "pii": [],
         "benign": ["data/adult/v2/reference.parquet", "hours-per-week", "native-country", w.float_1, w.float_3, "2026-11-29T12:00:05+00:00"]},
        {"name": "profile", "kind": "json", "value": _profile(w), "secrets": [], "pii": ["customer_phone"],
         "benign": ["Exec-managerial", "Prof-specialty", "United-States", "Self-emp-not-inc", "State-gov", "Philippines"]},
        {"name": "k8s-deployment", "kind": "json", "value": _k8s_status(w), "secrets": ["mlflow_tracking_password"], "pii": [],
         "benign": [w.uuid, w.image, w.pod, "churn-classifier-v3", "ml-serving", "http://127.0.0.1:5000", "ghcr-pull-secret", "MinimumReplicasAvailable", "2026-11-29T12:00:07Z", f"models:/{w.model_id}"]},
        {"name": "router-sample", "kind": "json", "value": _router_sample(w), "secrets": [], "pii": ["customer_iban"],
         "benign": [w.model_id, "State-gov", "Self-emp-not-inc", "HS-grad"]},
        {"name": "audit-line", "kind": "json", "value": _audit_line(w), "secrets": [], "pii": [],
         "benign": [w.thread_id, w.key_fp, w.signature, w.request_signature, w.digest, "2026-11-29T12:00:09.513402+00:00", f"approve:{w.thread_id}:churn-classifier:3"]},
        {"name": "gcp-service-account", "kind": "json", "value": _gcp_key(w), "secrets": ["gcp_private_key_body"], "pii": [],
         "benign": ["service_account", "https://oauth2.googleapis.com/token"]},
        {"name": "tool-arguments", "kind": "json", "value": _tool_args(w), "secrets": ["api_key_json", "client_secret"], "pii": [],
         "benign": ["/workspace/data/exports/churn@2x/customers.parquet", "churn-customers", "register_dataset"]},
        {"name": "log-lines", "kind": "text", "value": _log_lines(w),
         "secrets": ["bearer", "postgres_password", "slack_webhook", "aws_access_key_id", "aws_secret_access_key", "basic_auth"],
         "pii": ["client_ip", "reviewer_name", "customer_card", "customer_ssn", "customer_email"],
         "benign": [w.run_id, w.model_id, w.pod, w.image, w.thread_id, w.float_1, "2026-11-29T12:00:01.123Z", "mlops_supervisor.tools.training", "roc_auc", f"/workspace/.mlops/checkpoints/{w.thread_id}.sqlite", "Jensen-Shannon"]},
        {"name": "env-file", "kind": "text", "value": _env_file(w),
         "secrets": ["mlflow_tracking_password", "db_password", "openai_project", "anthropic", "huggingface", "github_pat", "gitlab_pat_long", "slack_bot", "databricks", "stripe", "google_api", "redis_password"],
         "pii": [], "benign": ["http://127.0.0.1:5000", "ci-bot", "churn-classifier", w.model_id]},
        {"name": "pipeline-yaml", "kind": "text", "value": _yaml_config(w),
         "secrets": ["smtp_password_yaml", "github_short", "registry_token", "azure_account_key", "azure_sas_sig"], "pii": ["owner_name"],
         "benign": ["/workspace/data/adult/v3/train.parquet", "sklearn.ensemble.GradientBoostingClassifier", w.float_2, w.image, "smtp.internal"]},
        {"name": "ci-ini", "kind": "text", "value": _ini_config(w), "secrets": ["github_fine_grained", "rsa_key_no_end_body", "jwt"], "pii": [],
         "benign": ["train-and-evaluate", "ubuntu-24.04"]},
    ]  # fmt: skip
    for item in out:
        item["secrets"] = [{"id": k, "entity": s[k][0], "value": s[k][1]} for k in item["secrets"]]
        item["pii"] = [{"id": k, "entity": p[k][0], "value": p[k][1]} for k in item["pii"]]
        text = item["value"] if item["kind"] == "text" else json.dumps(item["value"])
        for planted in (*item["secrets"], *item["pii"]):
            assert planted["value"] in text or json.dumps(planted["value"])[1:-1] in text, (item["name"], planted["id"])
        for benign in item["benign"]:
            assert benign in text, (item["name"], benign)
    return out


VARIANTS = 12
"""Copies of the corpus with fresh ids, secrets and names: enough text to time, and no two payloads alike."""


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    items = []
    for variant in range(VARIANTS):
        for item in payloads(World(20261201 + variant)):
            items.append({"variant": variant, **item})
    corpus = {"about": (__doc__ or "").splitlines()[0], "variants": VARIANTS, "payloads": items}
    # one payload a line: compact, and a diff of a regenerated file reads payload by payload
    head = json.dumps({k: v for k, v in corpus.items() if k != "payloads"}, ensure_ascii=False)[:-1]
    lines = ",\n".join(json.dumps(item, ensure_ascii=False) for item in items)
    OUT.write_text(f'{head}, "payloads": [\n{lines}\n]}}\n', "utf-8")
    size = sum(len(i["value"]) if i["kind"] == "text" else len(json.dumps(i["value"])) for i in items)
    print(f"wrote {OUT}: {len(items)} payloads, {size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
