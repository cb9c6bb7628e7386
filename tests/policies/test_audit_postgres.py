"""The audit chain in PostgreSQL: one gapless chain from concurrent processes, append-only, tampering named."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mlops_supervisor.policies import AuditLog, PatternRedactor, PostgresAuditLog, redact_value
from mlops_supervisor.policies.audit import _canonical, _line_hash
from mlops_supervisor.testing import PostgresServer
from tests._zygote import run_cli

from ..conftest import CLI


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A fresh database of the session's server."""
    return postgres.create_database(f"audit_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def chain(url: str) -> Iterator[PostgresAuditLog]:
    """A chain of five decision records."""
    log = PostgresAuditLog(url)
    for i in range(5):
        log.append("decision", thread_id="t-1", action=f"tool_{i}", decision="deny")
    yield log
    log.close()


def _as_owner_without_triggers(url: str, *statements: str) -> None:
    """Run ``statements`` with the table's triggers disabled: what a database owner bent on tampering could do."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE mlops_audit DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement.encode())
        conn.execute("ALTER TABLE mlops_audit ENABLE TRIGGER USER")


# A separate process: open the chain, say so, wait for the word, then append. Started with `python -c`, so each
# imports only the chain (a spawned multiprocessing child would import this test module and its conftest).
_APPENDER = """
import sys
from mlops_supervisor.policies._audit_postgres import PostgresAuditLog
url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = PostgresAuditLog(url)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    log.append("decision", worker=worker, i=i)
log.close()
"""


def test_four_processes_appending_at_once_make_one_gapless_chain(url: str) -> None:
    """4 processes x 100 appends at once: 400 rows, seq 1..400, each worker's lines in its order, chain intact;
    and every verify run while they append says intact."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, url, str(w), "100"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    try:
        for process in workers:  # every chain open before any append: they start together
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        # verified while the others append: rows beyond the head it read first are not a tampered tail
        watcher = PostgresAuditLog(url)
        checks = []
        while any(p.poll() is None for p in workers):
            checks.append(watcher.verify())
        watcher.close()
        assert checks and all(c.ok for c in checks), [c.problem for c in checks if not c.ok][:1]
        assert [p.wait(timeout=120) for p in workers] == [0, 0, 0, 0]
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
    log = PostgresAuditLog(url)
    records = list(log.records())
    assert [r["seq"] for r in records] == list(range(1, 401))
    for worker in range(4):
        assert [r["i"] for r in records if r["worker"] == worker] == list(range(100))
    # interleaved, not one process after another: the appends really raced
    assert len({r["worker"] for r in records[:100]}) > 1
    check = log.verify()
    assert (check.ok, check.lines, check.bad_line) == (True, 400, None)
    log.close()


def test_records_are_the_file_chains_records_with_the_hashed_bytes_kept(url: str, tmp_path: Path) -> None:
    """Fields are redacted as in the file; each row keeps the exact canonical text that was hashed."""
    redact = PatternRedactor()
    log = PostgresAuditLog(url, redact=lambda value: redact_value(redact, value))
    file = AuditLog(tmp_path / "audit.jsonl", redact=lambda value: redact_value(redact, value))
    fields = {"thread_id": "t-1", "note": "token sk-abcdefghijklmnopqrstuvwx1234", "n": 1.5, "nested": {"b": [1, "é"]}}
    written = [log.append("request", **fields), log.append("decision", decision="allow")]
    from_file = file.append("request", **fields)
    assert "sk-abcdefghijklmnopqrstuvwx1234" not in json.dumps(written)
    assert {k: v for k, v in written[0].items() if k not in {"ts", "hash"}} == {
        k: v for k, v in from_file.items() if k not in {"ts", "hash"}
    }
    assert list(log.records()) == written
    assert written[1]["prev"] == written[0]["hash"] == _line_hash({k: v for k, v in written[0].items() if k != "hash"})
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT seq, hash, record FROM mlops_audit ORDER BY seq").fetchall()
    assert rows == [(r["seq"], r["hash"], _canonical(r).decode()) for r in written]
    assert log.location.endswith("/" + url.rsplit("/", 1)[1] + "#mlops_audit")
    log.close()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE mlops_audit SET record = record WHERE seq = 2",
        "DELETE FROM mlops_audit WHERE seq = 5",
        "TRUNCATE mlops_audit",
        "DELETE FROM mlops_audit_head",
        "UPDATE mlops_audit_head SET seq = seq - 1",
    ],
)
def test_the_table_refuses_to_change_what_was_written(chain: PostgresAuditLog, url: str, statement: str) -> None:
    """UPDATE, DELETE and TRUNCATE of the chain, and moving its head back, are refused by the triggers."""
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException) as refused:
        conn.execute(statement.encode())
    assert "refused" in str(refused.value)
    assert chain.verify().ok


def test_a_row_edited_with_the_triggers_disabled_is_named(chain: PostgresAuditLog, url: str) -> None:
    """An owner who disables the triggers and edits row 3 is caught: verify names seq 3 as edited."""
    _as_owner_without_triggers(
        url, "UPDATE mlops_audit SET record = replace(record, '\"decision\":\"deny\"', '\"decision\":\"allow\"') "
        "WHERE seq = 3"
    )  # fmt: skip
    check = chain.verify()
    assert (check.ok, check.bad_line) == (False, 3)
    assert "edited" in check.problem


def test_a_removed_last_row_is_named(chain: PostgresAuditLog, url: str) -> None:
    """Deleting the last row (triggers disabled) leaves a head that records more: verify says rows were removed."""
    _as_owner_without_triggers(url, "DELETE FROM mlops_audit WHERE seq = 5")
    check = chain.verify()
    assert (check.ok, check.lines, check.bad_line) == (False, 4, 5)
    assert "removed from the end" in check.problem


def test_a_removed_middle_row_is_named(chain: PostgresAuditLog, url: str) -> None:
    """Deleting row 2 breaks the numbering at the second row."""
    _as_owner_without_triggers(url, "DELETE FROM mlops_audit WHERE seq = 2")
    check = chain.verify()
    assert (check.ok, check.bad_line) == (False, 2)


def _cli(workspace: Path, env_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLOPS_DATABASE_URL": env_url, "COLUMNS": "200"}
    return run_cli([CLI, "--workspace", str(workspace), *args], env=env, timeout=60)


def test_the_cli_verifies_and_shows_the_chain_in_postgres(chain: PostgresAuditLog, url: str, tmp_path: Path) -> None:
    """`audit verify --json` with MLOPS_DATABASE_URL reads the table: intact, then broken at the edited seq;
    the location it shows has no credentials."""
    with_password = url.replace("mlops@", "mlops:pw-canary-123@")  # trust authentication ignores it
    done = _cli(tmp_path / "ws", with_password, "audit", "verify", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["intact"], answer["lines"]) == (True, 5)
    assert answer["path"] == chain.location and "pw-canary-123" not in done.stdout + done.stderr
    assert "mlops@" not in answer["path"]
    shown = _cli(tmp_path / "ws", url, "audit", "show", "--json", "--limit", "2")
    assert [e["action"] for e in json.loads(shown.stdout)["events"]] == ["tool_3", "tool_4"]
    _as_owner_without_triggers(url, "UPDATE mlops_audit SET record = replace(record, 'tool_1', 'tool_9') WHERE seq = 2")
    broken = _cli(tmp_path / "ws", url, "audit", "verify", "--json")
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["bad_line"] == 2
    assert not (tmp_path / "ws").exists()  # the file chain was not touched, nor the workspace made


def test_a_url_that_is_not_postgres_is_a_usage_error(tmp_path: Path) -> None:
    """MLOPS_DATABASE_URL=mysql://... exits 2 naming the scheme and what is allowed, never the URL."""
    done = _cli(tmp_path / "ws", "mysql://root:hunter2-canary@db/x", "audit", "verify")
    assert done.returncode == 2
    assert "'mysql'" in done.stderr and "postgresql://" in done.stderr
    assert "hunter2-canary" not in done.stderr


def test_an_unreachable_server_is_named_with_what_to_check(tmp_path: Path) -> None:
    """A server that is not there: exit 1 naming host:port/db and what to check, never the password."""
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _cli(tmp_path / "ws", f"postgresql://mlops:pw-canary-456@127.0.0.1:{port}/shared", "audit", "verify")
    assert done.returncode == 1, done.stderr
    assert f"127.0.0.1:{port}/shared" in done.stderr and "PGPASSWORD" in done.stderr
    assert "pw-canary-456" not in done.stderr
