"""The MLflow store of a workspace: the embedded SQLite default, or a server named by the user.

MLflow's logging functions read a process-wide tracking URI. ``using_store`` sets ours for
the length of one tool call and puts back whatever the caller had (a notebook's own
``mlflow.set_tracking_uri`` or ``MLFLOW_TRACKING_URI`` included).

A tracking server with authentication takes its credentials from MLflow's own environment variables
(``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``), never
from the URI: ``check_tracking_uri`` refuses one with a user or password in it. A 401 or 403 from the
server leaves ``using_store`` as one ``TrackingServerRefusedError`` naming the server, the operation
and what to check.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlops_supervisor.policies.errors import RunError, UsageError

__all__ = [
    "TrackingServerRefusedError",
    "check_tracking_uri",
    "create_embedded_store",
    "default_tracking_uri",
    "ensure_embedded_store",
    "ensure_experiment",
    "server_of",
    "tracking_server_refusal",
    "using_store",
]

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""MLflow's own environment variables for a tracking server's credentials: the only place they are read from."""


class TrackingServerRefusedError(RunError):
    """The MLflow tracking server answered 401 (not authenticated) or 403 (permission denied)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def server_of(uri: str) -> str:
    """``scheme://host:port`` of an HTTP tracking URI: what a message may name (no user, password or path)."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def check_tracking_uri(uri: str | None) -> str | None:
    """``uri`` unchanged, unless it carries a user or password (``http://user:pass@host``): then ``UsageError``.

    The message names the server only, never what was in the user-info part.
    """
    if uri is None or "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        raise UsageError(
            f"the MLflow tracking URI (MLFLOW_TRACKING_URI or MLOPS_MLFLOW_TRACKING_URI) for {server_of(uri)} has "
            "credentials in it; give the URI without them and put the credentials in MLflow's own environment "
            "variables MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), which are "
            "never logged or shown"
        )
    return uri


_ENDPOINT = re.compile(r"API request to endpoint (\S+) failed")


def tracking_server_refusal(exc: BaseException, tracking_uri: str) -> TrackingServerRefusedError | None:
    """The clear error for an MLflow client's 401 or 403 from the tracking server ``tracking_uri``, else ``None``."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException) or not tracking_uri.startswith(("http://", "https://")):
        return None
    status = exc.get_http_status_code()  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
    if status not in (401, 403):
        return None
    found = _ENDPOINT.search(str(exc))
    operation = found.group(1).split("/mlflow/", 1)[-1] if found else "a request"
    server = server_of(tracking_uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    # short enough to be shown whole where a report cuts a failure at 300 characters
    if status == 401:
        who = f"user {user!r}" if user else "anyone (MLFLOW_TRACKING_USERNAME is not set)"
        return TrackingServerRefusedError(
            f"MLflow tracking server {server} did not authenticate {who} for {operation} (401): check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)",
            status=401,
        )
    return TrackingServerRefusedError(
        f"MLflow tracking server {server} refused {operation} to user {user or 'anonymous'!r} (403): check that it is "
        "the service account and has EDIT or MANAGE on the registered model (deploy/mlflow/README.md)",
        status=403,
    )


def default_tracking_uri(workspace: Path) -> str:
    """The embedded default: a SQLite database inside the workspace (made on first use, ``ensure_embedded_store``)."""
    return f"sqlite:///{Path(workspace).absolute() / 'mlflow.db'}"


def ensure_embedded_store(tracking_uri: str) -> None:
    """Make the workspace's embedded store from the empty template when ``tracking_uri`` names one that is not
    there yet (``create_embedded_store``); any other URI is left to MLflow."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    path = Path(tracking_uri.removeprefix("sqlite:///"))
    embedded = path.name == "mlflow.db" and tracking_uri == default_tracking_uri(path.parent)
    if embedded and not path.exists() and path.parent.is_dir():
        create_embedded_store(path.parent)


_TEMPLATE_LOCK = threading.Lock()


def _store_template() -> Path:
    """An empty MLflow SQLite store of this MLflow version, made once per user: MLflow's schema migrations cost
    one to two CPU-seconds (nine on a busy machine) in every process that meets a new store. It lives in a folder
    of the temporary directory that only this user can write."""
    import mlflow

    folder = Path(tempfile.gettempdir()) / f"mlops-supervisor-{os.getuid()}"
    template = folder / f"mlflow-{mlflow.__version__}-empty.db"
    with _TEMPLATE_LOCK:
        folder.mkdir(mode=0o700, exist_ok=True)
        mine = folder.stat()
        if mine.st_uid != os.getuid() or mine.st_mode & 0o077:
            raise PermissionError(f"{folder} is not this user's alone; not using a store template from it")
        if not template.exists():
            from mlflow.tracking import MlflowClient

            building = folder / f"building-{uuid.uuid4().hex}.db"
            try:
                MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments()
                os.replace(building, template)  # another process that finished first is replaced by the same schema
            finally:
                building.unlink(missing_ok=True)
    return template


def create_embedded_store(workspace: Path) -> None:
    """Create ``workspace``'s embedded store as a copy of the empty template, its Default experiment's artifacts
    inside the workspace; another process that created it first wins. Without a template MLflow builds the schema
    itself on first use, as it would anyway."""
    import logging
    import shutil
    import sqlite3

    path = Path(workspace).absolute() / "mlflow.db"
    try:
        template = _store_template()
    except Exception:
        logging.getLogger(__name__).debug("no MLflow store template", exc_info=True)
        return
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        shutil.copyfile(template, partial)
        partial.chmod(0o600)
        connection = sqlite3.connect(partial)
        try:
            with connection:
                connection.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (f"{artifact_root(workspace)}/0",),
                )
        finally:
            connection.close()
        with suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def artifact_root(workspace: Path) -> str:
    """Where runs in the embedded store keep their artifacts."""
    return (Path(workspace).absolute() / "mlartifacts").as_uri()


@contextmanager
def using_store(tracking_uri: str) -> Iterator[Any]:
    """Point MLflow at ``tracking_uri`` (tracking and registry) and yield a client on it; a 401 or 403 from a
    tracking server inside the block leaves as ``TrackingServerRefusedError``."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_tracking = tracking_utils._tracking_uri
    old_registry = registry_utils._registry_uri
    old_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    ensure_embedded_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except Exception as exc:
        refused = tracking_server_refusal(exc, tracking_uri)
        if refused is None:
            raise
        raise refused from exc
    finally:
        mlflow.set_tracking_uri(old_tracking)  # type: ignore[arg-type]  # None restores 'not set'
        registry_utils._registry_uri = old_registry
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_experiment(client: Any, name: str, *, workspace: Path, tracking_uri: str) -> str:
    """The id of experiment ``name``, created on first use (artifacts inside the workspace when embedded)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    location = artifact_root(workspace) if tracking_uri == default_tracking_uri(workspace) else None
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except Exception:  # another process created it first
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)
