"""An MLflow tracking server with basic-auth and a Postgres backend as the system of record.

One server for the module (``mlflow server --app-name basic-auth`` on loopback, Postgres from the
session's throwaway server). The pipeline runs through it as the CLI, with the supervisor's service
account in MLflow's own credential variables; a signed promotion goes through; the requester's own
MLflow credentials can read the model but not move ``champion`` or ``challenger``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlops_supervisor import Settings
from mlops_supervisor.policies import UsageError
from mlops_supervisor.testing import KeyRing, MlflowServer, PostgresServer, install_policy
from mlops_supervisor.tools.core import TrackingServerRefusedError, using_store
from tests._zygote import run_cli
from tests.conftest import CLI
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
SERVICE = "mlops-supervisor"


@dataclass
class Tracking:
    """The module's tracking server, its two accounts (made-up passwords) and what the CLI printed."""

    server: MlflowServer
    passwords: dict[str, str]
    outputs: list[str] = field(default_factory=list)

    def env(self, user: str | None, *, password: str | None = None) -> dict[str, str]:
        """A CLI environment on this server as ``user`` (``None``: no credentials)."""
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.server.url, "COLUMNS": "200"}
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            env.pop(key, None)
        if user is not None:
            env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password or self.passwords[user]}
        return env

    def cli(self, ws: Path, *args: str, who: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """``mlops-supervisor --workspace ws --as who ARGS`` in its own process; its output is kept."""
        done = run_cli([CLI, "--workspace", str(ws), "--as", who, *args], env=env, timeout=300)
        self.outputs.append(done.stdout + done.stderr)
        return done


@pytest.fixture(scope="module")
def tracking(postgres: PostgresServer) -> Iterator[Tracking]:
    """The server on a fresh Postgres database, with the service account and the requester alice."""
    database = postgres.create_database(f"mlflow_{uuid.uuid4().hex[:12]}")
    with MlflowServer(database) as server:
        passwords = {name: f"planted-{secrets.token_hex(12)}" for name in (SERVICE, "alice")}
        for name, password in passwords.items():
            server.create_user(name, password)
        yield Tracking(server, passwords)


@dataclass
class Promoted:
    ws: Path
    thread: str
    keys: KeyRing


@pytest.fixture(scope="module")
def promoted(tracking: Tracking, tmp_path_factory: pytest.TempPathFactory) -> Promoted:
    """The CLI ran the pipeline to ``register`` and a signed promotion of version 1 (alice asks, carol approves),
    every process holding the service account's credentials."""
    root = tmp_path_factory.mktemp("tracked")
    ws = root / "ws"
    keys = KeyRing(root / "keys")
    service = tracking.env(SERVICE) | {"MLOPS_KEY_DIR": str(keys.directory)}
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"])
    ran = tracking.cli(ws, "run", str(spec), "--stop-after", "register", "--json", who="alice", env=service)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    install_policy(ws, keys.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=keys)
    # traced (as by default outside the tests): the trace goes to the server as the service account too
    traced = service | {"MLOPS_TRACING": "1"}
    asked = tracking.cli(ws, "ask", f"promote {MODEL} version 1 to production", "--json", who="alice", env=traced)
    assert asked.returncode == 4, asked.stdout[-3000:] + asked.stderr[-3000:]
    report = json.loads(asked.stdout)
    assert report["trace_id"] and not report["tracing_problem"], report["tracing_problem"]
    thread = report["thread_id"]
    done = tracking.cli(ws, "approve", thread, "--reason", "evidence reviewed", "--json", who="carol", env=service)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Promoted(ws, thread, keys)


def _client(tracking: Tracking, user: str | None, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client on the server acting as ``user`` (MLflow reads the variables at each request)."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if user is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", tracking.passwords[user])
    return MlflowClient(tracking_uri=tracking.server.url, registry_uri=tracking.server.url)


def _aliases(client: MlflowClient) -> dict[str, int]:
    return {name: int(version) for name, version in client.get_registered_model(MODEL).aliases.items()}


def test_the_pipeline_registers_and_a_signed_promotion_lands_on_the_tracking_server(
    tracking: Tracking, promoted: Promoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 is champion on the server, with the approval's tags, and the service account manages the model."""
    client = _client(tracking, SERVICE, monkeypatch)
    assert _aliases(client)["champion"] == 1
    tags = client.get_model_version(MODEL, "1").tags
    assert (tags["mlops.approval.approver"], tags["mlops.approval.requester"]) == ("carol", "alice")
    assert tags["mlops.eval.passed"] == "true"
    # the register step ran under the service account, so the server made it the model's manager
    assert tracking.server.permission(MODEL, SERVICE) == "MANAGE"
    assert tracking.server.permission(MODEL, "alice") == "READ"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda c: c.set_registered_model_alias(MODEL, "champion", "1"), id="set-champion"),
        pytest.param(lambda c: c.set_registered_model_alias(MODEL, "challenger", "1"), id="set-challenger"),
        pytest.param(lambda c: c.delete_registered_model_alias(MODEL, "champion"), id="delete-champion"),
    ],
)
def test_the_requesters_own_credentials_cannot_move_an_alias(
    tracking: Tracking, promoted: Promoted, monkeypatch: pytest.MonkeyPatch, change: Any
) -> None:
    """alice's MLflow credentials read the model and its aliases, but setting or deleting an alias is 403."""
    client = _client(tracking, "alice", monkeypatch)
    before = _aliases(client)
    assert before["champion"] == 1
    with pytest.raises(MlflowException) as refused:
        change(client)
    status = refused.value.get_http_status_code()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
    assert (refused.value.error_code, status) == ("PERMISSION_DENIED", 403)
    assert _aliases(client) == before
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"


def test_anonymous_and_wrong_credentials_get_401(tracking: Tracking, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials, or a wrong password, is 401 on the REST API; the store turns it into one clear error."""
    url = tracking.server.url
    anonymous = httpx.get(f"{url}/api/2.0/mlflow/registered-models/search", timeout=30)
    assert anonymous.status_code == 401
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", SERVICE)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password-123")
    with pytest.raises(TrackingServerRefusedError) as refused, using_store(url) as client:
        client.search_registered_models()
    message = str(refused.value)
    assert refused.value.status == 401
    assert url in message and "registered-models/search" in message
    assert "MLFLOW_TRACKING_USERNAME" in message and "not-the-password-123" not in message


def test_a_refused_alias_change_is_one_clear_error_naming_server_and_operation(
    tracking: Tracking, promoted: Promoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 403 inside the store's block leaves as TrackingServerRefusedError naming server, operation and user."""
    _client(tracking, "alice", monkeypatch)
    with pytest.raises(TrackingServerRefusedError) as refused, using_store(tracking.server.url) as client:
        client.set_registered_model_alias(MODEL, "champion", "1")
    assert refused.value.status == 403
    assert str(refused.value).startswith(
        f"MLflow tracking server {tracking.server.url} refused registered-models/alias to user 'alice' (403)"
    )


def test_a_gate_that_cannot_read_its_evidence_says_no(tracking: Tracking, promoted: Promoted, tmp_path: Path) -> None:
    """With credentials the server does not accept, a promotion request is refused with the 401 reason, no traceback."""
    env = tracking.env(SERVICE, password="not-the-password-123") | {"MLOPS_KEY_DIR": str(promoted.keys.directory)}
    asked = tracking.cli(promoted.ws, "ask", f"promote {MODEL} version 1 to production", "--json", who="alice", env=env)
    assert asked.returncode == 3, asked.stdout[-3000:] + asked.stderr[-3000:]
    decisions = json.loads(asked.stdout)["decisions"]
    denied = [d for d in decisions if d["decision"] == "deny"]
    assert denied and denied[-1]["reason_code"] == "evidence_unavailable"
    assert f"MLflow tracking server {tracking.server.url} did not authenticate user" in denied[-1]["message"]
    assert "Traceback" not in asked.stdout + asked.stderr


def test_credentials_in_the_tracking_uri_are_refused_without_echoing_them(tracking: Tracking, tmp_path: Path) -> None:
    """A tracking URI with user:password@ stops the CLI with exit 2, pointing at MLflow's variables; no password shown."""
    password = tracking.passwords["alice"]
    env = tracking.env(None)
    env["MLFLOW_TRACKING_URI"] = tracking.server.url.replace("://", f"://alice:{password}@")
    done = tracking.cli(tmp_path / "ws", "status", who="alice", env=env)
    assert done.returncode == 2
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in done.stderr
    assert tracking.server.url in done.stderr
    assert password not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_no_password_reaches_the_workspace_the_audit_log_mlflow_or_the_output(
    tracking: Tracking, promoted: Promoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted passwords appear in no workspace file, audit line, run param or tag, or CLI output."""
    planted = [p.encode() for p in tracking.passwords.values()]
    files = [p for p in promoted.ws.rglob("*") if p.is_file()]
    assert (promoted.ws / "audit.jsonl") in files
    leaks = [str(p) for p in files if any(secret in p.read_bytes() for secret in planted)]
    assert leaks == []
    assert all(secret.decode() not in output for output in tracking.outputs for secret in planted)
    client = _client(tracking, SERVICE, monkeypatch)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert runs
    recorded = json.dumps([[r.data.params, r.data.tags] for r in runs])
    recorded += json.dumps([dict(v.tags) for v in client.search_model_versions(f"name='{MODEL}'")])
    traces = client.search_traces(locations=experiments)
    assert traces
    recorded += json.dumps([trace.to_dict() for trace in traces], default=str)
    assert all(secret.decode() not in recorded for secret in planted)


def test_the_service_account_needs_a_grant_on_a_model_it_did_not_create(
    tracking: Tracking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model someone else created is 403 to the service account (one clear error) until the admin grants EDIT."""
    name = f"owned-by-alice-{uuid.uuid4().hex[:6]}"
    _client(tracking, "alice", monkeypatch).create_registered_model(name)
    _client(tracking, SERVICE, monkeypatch)
    with pytest.raises(TrackingServerRefusedError) as refused, using_store(tracking.server.url) as client:
        client.set_registered_model_tag(name, "mlops.owner", SERVICE)
    assert refused.value.status == 403
    assert f"to user {SERVICE!r} (403)" in str(refused.value) and "EDIT or MANAGE" in str(refused.value)
    assert tracking.server.permission(name, SERVICE) == "READ"
    tracking.server.grant(name, SERVICE, "EDIT")
    with using_store(tracking.server.url) as client:
        client.set_registered_model_tag(name, "mlops.owner", SERVICE)
        assert client.get_registered_model(name).tags["mlops.owner"] == SERVICE


@pytest.mark.parametrize("userinfo", ["bob:hunter2-planted@", "bob@"])
def test_settings_refuse_a_tracking_uri_with_credentials(monkeypatch: pytest.MonkeyPatch, userinfo: str) -> None:
    """Settings (library and CLI alike) refuse user-info in the tracking URI, naming only scheme, host and port."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://{userinfo}mlflow.example:8443/prefix")
    with pytest.raises(UsageError) as refused:
        Settings()
    message = str(refused.value)
    assert "https://mlflow.example:8443 has credentials in it" in message
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message
    assert "hunter2" not in message and "bob" not in message and "/prefix" not in message
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example:8443/prefix")
    assert Settings().mlflow_tracking_uri == "https://mlflow.example:8443/prefix"


def test_model_servers_load_the_promoted_version_with_credentials_from_the_environment(
    tracking: Tracking, promoted: Promoted, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local backend's model server reads the version from the authenticated server (credentials inherited
    from the environment) and serves it; no process's command line holds the password."""
    import pandas as pd

    from mlops_supervisor.tools.serving import LocalBackend

    client = _client(tracking, SERVICE, monkeypatch)
    source = client.get_model_version(MODEL, "1").source
    assert source is not None
    test = pd.read_parquet(next(promoted.ws.glob("datasets/*/splits/*/test.parquet")))
    records = json.loads(test.drop(columns=["class", "sex"]).head(5).to_json(orient="records"))  # sex: not a feature
    backend = LocalBackend.for_workspace(promoted.ws, tracking.server.url)
    try:
        status = backend.deploy(MODEL, 1, source, weight=100)
        answer = httpx.post(f"{status['router']['url']}/invocations", json={"dataframe_records": records}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 5
        pids = [int(p.stem) for p in promoted.ws.rglob("procs/*.json")]
        assert pids
        for pid in pids:
            assert tracking.passwords[SERVICE].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        backend.down()
