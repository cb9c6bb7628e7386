"""Where threads, approvals and the audit chain are kept.

By default, the workspace's own files: a SQLite checkpoint database and the JSON-lines audit chain.
When ``MLOPS_DATABASE_URL`` (``Settings.database_url``) names a PostgreSQL database, both live there
instead, so a request made on one host can be approved from another host's CLI, and every host appends
to one audit chain. Each is opened by one constructor here, used by the supervisor and the CLI alike.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from mlops_supervisor._settings import Settings
from mlops_supervisor.policies import AuditLog, AuditStore, PostgresAuditLog
from mlops_supervisor.policies._audit_postgres import check_database_url, connect, postgres_location
from mlops_supervisor.policies.audit import Redact

__all__ = ["Checkpoints", "database_url", "embedded_stores", "open_audit", "open_checkpoints"]


def database_url(settings: Settings) -> str | None:
    """The PostgreSQL URL the settings name, checked (``UsageError`` naming a wrong scheme); None when unset."""
    secret = settings.database_url
    if secret is None or not secret.get_secret_value().strip():
        return None
    return check_database_url(secret.get_secret_value().strip())


@contextmanager
def embedded_stores() -> Iterator[None]:
    """Within it, supervisors keep threads and the audit chain in their own workspace even where
    MLOPS_DATABASE_URL names a shared database: for self-contained sandboxes (the demo, eval trials), whose
    throwaway policies and threads must not join a real deployment's (the chain's latest installed policy is
    the one every host of that database must hold)."""
    saved = os.environ.pop("MLOPS_DATABASE_URL", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLOPS_DATABASE_URL"] = saved


def open_audit(settings: Settings, workspace: Path, *, redact: Redact | None = None) -> AuditStore:
    """The audit chain for these settings: ``<workspace>/audit.jsonl``, or the ``mlops_audit`` table of the
    PostgreSQL database (created on first use; ``RunError`` naming host, port and database when unreachable)."""
    url = database_url(settings)
    if url is None:
        return AuditLog(Path(workspace) / "audit.jsonl", redact=redact, fsync=settings.audit_fsync)
    return PostgresAuditLog(url, redact=redact)


class Checkpoints(Protocol):
    """A LangGraph checkpointer with the thread listing the supervisor needs."""

    saver: Any
    location: str

    def thread_ids(self) -> list[str]:
        """Every thread, oldest first."""
        ...

    def close(self) -> None:
        """Release its connections."""
        ...


class _SqliteCheckpoints:
    def __init__(self, path: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.location = str(path)
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self.saver: Any = SqliteSaver(self._conn)

    def thread_ids(self) -> list[str]:
        try:
            rows = self._conn.execute(
                "SELECT thread_id FROM checkpoints GROUP BY thread_id ORDER BY MIN(rowid)"
            ).fetchall()
        except sqlite3.OperationalError:  # no checkpoint written yet: the saver creates its tables lazily
            return []
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        self._conn.close()


_SET_UP: set[str] = set()
_SET_UP_LOCK = threading.Lock()
# One key for every process and host: PostgresSaver.setup() runs migrations (CREATE INDEX CONCURRENTLY among
# them) that must not run twice at once.
_SETUP_LOCK_KEY = 0x6D6C6F7073_636B  # "mlops" "ck"


class _PostgresCheckpoints:
    def __init__(self, url: str) -> None:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.location = postgres_location(url)
        # A plain connection first: it fails with a message that names the server, where a pool would only time out.
        with connect(url, what="the checkpoint store", autocommit=True) as probe:
            # The saver needs autocommit (its migrations), dict rows, and no prepared statements (poolers, PgBouncer).
            self._pool: Any = ConnectionPool(
                url,
                min_size=1,
                max_size=4,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=True,
            )
            self.saver: Any = PostgresSaver(self._pool)
            try:
                with _SET_UP_LOCK:
                    if url not in _SET_UP:
                        probe.execute("SELECT pg_advisory_lock(%s)", (_SETUP_LOCK_KEY,))
                        try:
                            self.saver.setup()
                        finally:
                            probe.execute("SELECT pg_advisory_unlock(%s)", (_SETUP_LOCK_KEY,))
                        _SET_UP.add(url)
            except BaseException:
                self._pool.close()
                raise

    def thread_ids(self) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id "
                "ORDER BY MIN(checkpoint_id)"  # checkpoint ids are time-ordered UUIDv6: the first is the oldest
            ).fetchall()
        return [str(r["thread_id"]) for r in rows]

    def close(self) -> None:
        self._pool.close()


def open_checkpoints(settings: Settings, checkpoints_path: Path) -> Checkpoints:
    """The checkpointer for these settings: SQLite at ``checkpoints_path``, or PostgresSaver on a small pool over
    the PostgreSQL database (its tables set up once per process, under an advisory lock shared by every host)."""
    url = database_url(settings)
    if url is None:
        return _SqliteCheckpoints(checkpoints_path)
    return _PostgresCheckpoints(url)
