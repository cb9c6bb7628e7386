"""Two hosts sharing one PostgreSQL (threads, approvals, the audit chain) and one MLflow store: a promotion
asked on host A is approved from host B's CLI, with its own workspace and keys, and finishes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mlops_supervisor import Supervisor
from mlops_supervisor._results import WorkspaceStatus
from mlops_supervisor._settings import Settings
from mlops_supervisor._workspace import Workspace
from mlops_supervisor.policies import PatternRedactor, PolicyFileError, PostgresAuditLog, RunError, UsageError
from mlops_supervisor.testing import KeyRing, PostgresServer
from tests._zygote import run_cli
from tests.conftest import CLI
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"


@dataclass(frozen=True)
class Hosts:
    """Two workspaces ("hosts") with their own key directories, sharing ``env``'s Postgres and MLflow store."""

    root: Path
    a: Path
    b: Path
    keys_a: Path
    keys_b: Path
    url: str
    env: dict[str, str]

    def cli(self, host: str, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The real CLI on ``host`` (its workspace and key directory) as ``user``."""
        ws, keys = (self.a, self.keys_a) if host == "a" else (self.b, self.keys_b)
        env = {**os.environ, **self.env, "MLOPS_KEY_DIR": str(keys), "COLUMNS": "200"}
        return run_cli([CLI, "--workspace", str(ws), "--as", user, *args], env=env, cwd=self.root, timeout=180)

    def supervisor(self, host: str, user: str) -> Supervisor:
        """A supervisor in this process on ``host`` as ``user`` (the pattern redactor: Presidio is not the subject)."""
        ws, keys = (self.a, self.keys_a) if host == "a" else (self.b, self.keys_b)
        return Supervisor(ws, user=user, key=keys / user, redactor=PatternRedactor())


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Hosts:
    """Host A ran the pipeline to `register` (version 1 evaluated, challenger) and installed the policy (carol
    approves, alice may ask); host B holds the same policy text. Alice's key is on A; carol's and alice's on B."""
    root = tmp_path_factory.mktemp("shared")
    url = postgres.create_database("shared_state")
    env = {
        "MLOPS_DATABASE_URL": url,
        "MLOPS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    ring = KeyRing(root / "ring")
    policy = ring.policy(approvers=["carol"], people=["alice"])
    keys_a, keys_b = root / "host-a-keys", root / "host-b-keys"
    for directory, names in ((keys_a, ["alice"]), (keys_b, ["carol", "alice"])):
        directory.mkdir(mode=0o700)
        for name in names:
            shutil.copy2(ring.path(name), directory / name)
    hosts = Hosts(root, root / "a" / "ws", root / "b" / "ws", keys_a, keys_b, url, env)
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"])
    # MLflow puts a non-embedded SQLite store's artifacts under ./mlruns: the shared root, like a shared artifact store
    with _environment(env), contextlib.chdir(root):
        with hosts.supervisor("a", "alice") as sup:
            result = sup.run_pipeline(spec, stop_after="register")
        assert result.status == "done", result.report.summary
        path = root / "policy.yaml"
        path.write_text(yaml.safe_dump(policy), "utf-8")
        # testing.install_policy, with the pattern redactor: what it does, without loading Presidio's models here
        with Supervisor(hosts.a, user="carol", key=ring.path("carol"), redactor=PatternRedactor()) as admin:
            assert admin.apply_policy(path)["status"] == "installed"
    # The installation is in the shared chain; host B holds the text it records (see the report: a policy kept
    # beside the shared stores would make this copy unnecessary).
    Workspace.open(hosts.b)
    shutil.copy2(hosts.a / "policy.yaml", hosts.b / "policy.yaml")
    shutil.copytree(hosts.a / "policies", hosts.b / "policies")
    return hosts


def _champion(hosts: Hosts) -> int | None:
    from mlflow.tracking import MlflowClient

    uri = hosts.env["MLOPS_MLFLOW_TRACKING_URI"]
    aliases = MlflowClient(tracking_uri=uri, registry_uri=uri).get_registered_model(MODEL).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


def test_a_promotion_asked_on_host_a_is_approved_from_host_b_and_finishes(
    hosts: Hosts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alice asks on A (paused); alice's own approval on B is refused; carol's `approve` on B's CLI finishes it:
    champion set, both hosts list the thread as done, and the one chain in Postgres holds both hosts' lines."""
    asked = hosts.cli("a", "alice", "ask", f"promote {MODEL} version 1 to production", "--json")
    assert asked.returncode == 4, asked.stdout + asked.stderr
    thread = json.loads(asked.stdout)["thread_id"]
    for name, value in hosts.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(hosts.root)
    with hosts.supervisor("b", "alice") as on_b:
        assert thread in on_b.thread_ids()
        own = on_b.approve(thread)
    assert own.status == "refused"
    assert "self_approval" in {d.reason_code for d in own.decisions}
    assert _champion(hosts) is None

    done = hosts.cli("b", "carol", "approve", thread, "--reason", "evidence reviewed", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["status"] == "done"
    assert _champion(hosts) == 1

    for host in ("a", "b"):
        with hosts.supervisor(host, "carol") as sup:
            status = sup.status()
        assert isinstance(status, WorkspaceStatus)
        listed = {t.thread_id: t.status for t in status.threads}
        assert listed[thread] == "done", (host, listed)
        assert status.audit_intact
    chain = PostgresAuditLog(hosts.url)
    records = [r for r in chain.records() if r.get("thread_id") == thread]
    assert chain.verify().ok
    chain.close()
    events = [(r["event"], r.get("requester"), r.get("approver")) for r in records]
    assert ("request", "alice", None) in events  # written on host A
    assert any(e == "approval_refused" and who == "alice" for e, _, who in events)  # host B, alice
    approvals = [r for r in records if r["event"] == "approval"]
    assert approvals and approvals[-1]["approver"] == "carol"  # host B, carol
    # nothing of it in either workspace's own files
    for ws in (hosts.a, hosts.b):
        assert not (ws / "audit.jsonl").exists() and not (ws / "checkpoints.sqlite").exists()


def test_a_host_holding_another_policy_is_stopped(
    hosts: Hosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose policy file is not the one the shared chain records as installed refuses to run."""
    for name, value in hosts.env.items():
        monkeypatch.setenv(name, value)
    other = tmp_path / "ws"
    Workspace.open(other)
    looser = yaml.safe_load((hosts.a / "policy.yaml").read_text("utf-8"))
    looser["approvers"] = ["alice", "carol"]
    (other / "policy.yaml").write_text(yaml.safe_dump(looser), "utf-8")
    with pytest.raises(PolicyFileError, match="not the policy last installed"):
        Supervisor(other, user="alice", redactor=PatternRedactor())


def test_an_unreachable_database_stops_the_supervisor_before_anything_is_written(tmp_path: Path) -> None:
    """Postgres not reachable: RunError naming host:port/database and what to check; no workspace is created."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(database_url=f"postgresql://mlops:pw-canary@127.0.0.1:{port}/threads")  # type: ignore[arg-type]
    with pytest.raises(RunError) as stopped:
        Supervisor(tmp_path / "ws", settings=settings, redactor=PatternRedactor())
    assert f"127.0.0.1:{port}/threads" in str(stopped.value) and "pw-canary" not in str(stopped.value)
    assert not (tmp_path / "ws").exists()


def test_threads_in_the_shared_database_are_listed_oldest_first(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads asked on two hosts of one database are listed by both, oldest first; neither host has a file."""
    monkeypatch.setenv("MLOPS_DATABASE_URL", postgres.create_database("thread_listing"))
    asked = []
    for host in ("a", "b", "a"):
        with Supervisor(tmp_path / host, user="alice", redactor=PatternRedactor()) as sup:
            asked.append(sup.ask("help").thread_id)
    for host in ("a", "b"):
        with Supervisor(tmp_path / host, user="carol", redactor=PatternRedactor()) as sup:
            assert sup.thread_ids() == asked
        assert not (tmp_path / host / "checkpoints.sqlite").exists()


def test_a_database_url_that_is_not_postgres_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """A sqlite:// URL as the database: UsageError naming the scheme and what is allowed; no workspace."""
    settings = Settings(database_url="sqlite:///threads.db")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"'sqlite'.*postgresql://"):
        Supervisor(tmp_path / "ws", settings=settings, redactor=PatternRedactor())
    assert not (tmp_path / "ws").exists()
