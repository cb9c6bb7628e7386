"""The audit chain catches edits, deletions, swaps and truncation, and survives concurrent writers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_supervisor.policies import AuditLog, PatternRedactor, redact_value, verify_audit_log

from .._zygote import run_cli
from ..conftest import CLI


def _log_with(path: Path, n: int) -> AuditLog:
    log = AuditLog(path)
    for i in range(n):
        log.append("decision", thread_id="t-1", action=f"tool_{i}", decision="deny")
    return log


def _lines(path: Path) -> list[str]:
    return path.read_text("utf-8").splitlines(keepends=True)


def test_intact_chain_verifies(tmp_path: Path) -> None:
    """A chain written by AuditLog verifies, with its line count."""
    _log_with(tmp_path / "audit.jsonl", 5)
    result = verify_audit_log(tmp_path / "audit.jsonl")
    assert (result.ok, result.lines, result.bad_line) == (True, 5, None)


def test_edited_line_is_named(tmp_path: Path) -> None:
    """Changing one field of line 3 breaks the chain at line 3."""
    path = tmp_path / "audit.jsonl"
    _log_with(path, 5)
    lines = _lines(path)
    record = json.loads(lines[2])
    record["decision"] = "allow"
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines), "utf-8")
    result = verify_audit_log(path)
    assert (result.ok, result.bad_line) == (False, 3)
    assert "edited" in result.problem


def test_deleted_line_is_named(tmp_path: Path) -> None:
    """Deleting line 2 breaks the chain at line 2."""
    path = tmp_path / "audit.jsonl"
    _log_with(path, 5)
    lines = _lines(path)
    del lines[1]
    path.write_text("".join(lines), "utf-8")
    result = verify_audit_log(path)
    assert (result.ok, result.bad_line) == (False, 2)


def test_swapped_lines_are_named(tmp_path: Path) -> None:
    """Swapping lines 3 and 4 breaks the chain at line 3."""
    path = tmp_path / "audit.jsonl"
    _log_with(path, 5)
    lines = _lines(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_text("".join(lines), "utf-8")
    result = verify_audit_log(path)
    assert (result.ok, result.bad_line) == (False, 3)


def test_truncated_tail_is_caught(tmp_path: Path) -> None:
    """Cutting the last line is caught through the head file."""
    path = tmp_path / "audit.jsonl"
    _log_with(path, 4)
    path.write_text("".join(_lines(path)[:-1]), "utf-8")
    result = verify_audit_log(path)
    assert not result.ok
    assert result.bad_line == 4
    assert "cut from the end" in result.problem


def test_fields_pass_the_redactor(tmp_path: Path) -> None:
    """A secret handed to the audit log is stored as a placeholder."""
    redactor = PatternRedactor()
    log = AuditLog(tmp_path / "audit.jsonl", redact=lambda v: redact_value(redactor, v))
    log.append("request", request="mail bob@example.com with key sk-proj-abcdefghijklmnopqrstuvwxyz123")
    text = (tmp_path / "audit.jsonl").read_text("utf-8")
    assert "bob@example.com" not in text
    assert "sk-proj-" not in text
    assert "<EMAIL_ADDRESS>" in text
    assert "<API_KEY>" in text


_WRITER = """
import sys
from pathlib import Path
from mlops_supervisor.policies import AuditLog
log = AuditLog(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    log.append("tool_call", thread_id="w" + sys.argv[2], action=f"n{i}")
"""


def test_concurrent_processes_keep_one_chain(tmp_path: Path) -> None:
    """Four processes appending at once leave one intact chain with every line."""
    path = tmp_path / "audit.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w), "50"]) for w in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    result = verify_audit_log(path)
    assert (result.ok, result.lines) == (True, 200)


@pytest.mark.parametrize("damage", ["edit", "delete", "swap"])
def test_cli_audit_verify_exit_codes(tmp_path: Path, damage: str) -> None:
    """`audit verify` exits 0 on an intact log and 1 naming the first bad line after damage."""
    ws = tmp_path / "ws"
    path = ws / "audit.jsonl"
    _log_with(path, 4)
    ok = run_cli([CLI, "--workspace", str(ws), "audit", "verify"])
    assert ok.returncode == 0, ok.stderr
    lines = _lines(path)
    if damage == "edit":
        lines[1] = lines[1].replace('"deny"', '"allow"')
    elif damage == "delete":
        del lines[1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines), "utf-8")
    bad = run_cli([CLI, "--workspace", str(ws), "audit", "verify"])
    assert bad.returncode == 1
    assert "line 2" in bad.stderr


def test_audit_import_stays_light() -> None:
    """`audit verify` does not import langgraph or mlflow, so it starts fast."""
    code = (
        "import sys, mlops_supervisor._cli as c; print(any(m.startswith(('langgraph', 'mlflow')) for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
