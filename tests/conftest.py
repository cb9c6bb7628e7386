"""Shared fixtures. No test may reach a real model: requests are refused unless a test opts in."""

from __future__ import annotations

import hashlib
import os

# Set before anything imports tldextract or builds a model: children inherit them too.
os.environ["MLOPS_ALLOW_MODEL_REQUESTS"] = "0"
os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
os.environ.pop("OPENAI_API_KEY", None)
os.environ.pop("MLOPS_WORKSPACE", None)
os.environ.pop("MLOPS_POLICY", None)
os.environ.pop("MLOPS_MODEL", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLOPS_MLFLOW_TRACKING_URI", None)
os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
# Tracing is tested where it is the subject (test_tracing.py, and the canary search of test_canaries.py,
# which turn it back on) and in the built-in evals, which run with it on; elsewhere each request would
# pay for MLflow's trace store and the redaction of every span, seconds per CLI process.
os.environ["MLOPS_TRACING"] = "0"

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.testing import KeyRing, PostgresServer, PrometheusServer, install_policy, prometheus_binary
from tests._zygote import run_cli

# A shell that starts a command in the background (`make test &`) starts it with SIGINT ignored, and
# every process the tests spawn would inherit that: the tests of Ctrl-C (a CLI interrupted while a
# server starts, the chat) need Python's own handler, which a spawned process then gets as the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CLI = str(Path(sys.executable).parent / "mlops-supervisor")
REPO = Path(__file__).resolve().parents[1]
# SHA-256 of each file copied from the project's shared data (`../shared/data`), taken there: tests/fixtures/README.md
SHARED_DIGESTS = REPO / "tests" / "fixtures" / "shared-data.sha256"
EXAMPLE_SPEC = REPO / "examples" / "adult-income.yaml"
ADULT = REPO / "examples" / "data" / "adult.parquet"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server on loopback for this test process (each test makes its own databases)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusServer]:
    """A throwaway Prometheus on loopback for this test process, scraping 1 s apart what a test gives it."""
    if prometheus_binary() is None:
        pytest.skip("Debian's prometheus is not installed (scripts/system-deps.sh installs it)")
    with PrometheusServer(scrape_interval=1.0) as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Path]:
    """A fresh workspace path (not yet created); whatever it still serves when the test ends is stopped, so a
    test that fails (or forgets) before its own ``down`` leaves no server running."""
    ws = tmp_path / "ws"
    yield ws
    if (ws / "serving").exists():
        from mlops_supervisor.tools.serving import LocalBackend

        LocalBackend.for_workspace(ws).down()


@pytest.fixture(autouse=True)
def key_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own key directory (``MLOPS_KEY_DIR``): nobody's real keys are read or written."""
    path = tmp_path / "keys"
    monkeypatch.setenv("MLOPS_KEY_DIR", str(path))
    monkeypatch.delenv("MLOPS_KEY", raising=False)
    return path


@pytest.fixture
def keys(key_dir: Path) -> KeyRing:
    """Ed25519 keys for the test's people, made on first use, in ``key_dir``."""
    return KeyRing(key_dir)


@pytest.fixture
def policy_file(tmp_path: Path, workspace: Path, keys: KeyRing) -> Path:
    """The workspace policy, installed (signed by release-manager): release-manager approves, alice may
    request, and show_policy (a harmless read) is held for approval. The file it returns is that policy."""
    path = tmp_path / "policy.yaml"
    held = {"required_for": ["promote_model", "show_policy"]}
    doc = keys.policy(approvers=["release-manager"], people=["alice"], approval=held)
    path.write_text(yaml.safe_dump(doc), "utf-8")
    install_policy(workspace, path, admin="release-manager", keys=keys)
    return path


def store_client(ws: Path) -> Any:
    """An MLflow client on ``ws``'s embedded store (tracking and registry)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{ws / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_of(ws: Path, model: str) -> int | None:
    """The version ``model``'s champion alias points at in ``ws``, or None."""
    aliases = store_client(ws).get_registered_model(model).aliases
    return int(aliases["champion"]) if "champion" in aliases else None


def with_overrides(spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``spec`` with each ``a__b__c=value`` set at ``spec[a][b][c]`` (in place; returned for chaining)."""
    for dotted, value in changes.items():
        node = spec
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return spec


CliRun = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(workspace: Path) -> Iterator[CliRun]:
    """Run ``mlops-supervisor`` in a separate process against ``workspace``: forked from this worker's zygote,
    or, with ``fresh=True``, the installed entry point started from scratch.

    Afterwards, whatever servers the commands left in ``workspace`` (or its demo) are stopped:
    a CLI killed by a test's timeout cannot stop its own.
    """

    def run(
        *args: str,
        user: str = "alice",
        policy: Path | None = None,
        ws: Path | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
        fresh: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [CLI, "--workspace", str(ws or workspace), "--as", user]
        if policy is not None:
            cmd += ["--policy", str(policy)]
        env = {**os.environ, "COLUMNS": "200"}  # keep rich from wrapping messages the tests read
        return run_cli([*cmd, *args], env=env, cwd=cwd, timeout=timeout, fresh=fresh)

    yield run
    from mlops_supervisor.tools.serving import LocalBackend

    for root in (workspace, workspace / "demo"):
        LocalBackend.for_workspace(root).down()


@pytest.fixture
def kube() -> Iterator[Any]:
    """A Kubernetes API emulator on loopback (``tests._kube.KubeEmulator``), stopped afterwards."""
    from tests._kube import KubeEmulator

    with KubeEmulator() as emulator:
        yield emulator


# CI's sharing of the suite over its xdist workers (see tests/_schedule.py).
from tests._schedule import pytest_collection_modifyitems, pytest_xdist_make_scheduler  # noqa: E402, F401


def shared_digests() -> dict[str, str]:
    """The shared data's SHA-256 per file the project copied, by its path relative to ``../shared/data``."""
    lines = SHARED_DIGESTS.read_text("utf-8").splitlines()
    return {path: digest for digest, path in (line.split("  ", 1) for line in lines)}


def digest_of(path: Path) -> str:
    """The SHA-256 of ``path``'s bytes, in hex (as ``sha256sum`` writes it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
