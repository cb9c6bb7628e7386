"""The CLI processes forked from the zygote answer as the installed entry point started from scratch does."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests._zygote import run_cli
from tests.conftest import CLI


def _both(*args: str, cwd: Path, stdin: str | None = None) -> tuple[subprocess.CompletedProcess[str], ...]:
    env = {**os.environ, "COLUMNS": "200"}
    return tuple(run_cli([CLI, *args], env=env, cwd=cwd, input=stdin, fresh=fresh) for fresh in (False, True))


def test_exit_codes_streams_stdin_and_working_directory_match_a_fresh_process(tmp_path: Path) -> None:
    """Exit 0 and 2 (ours and click's), stdout and stderr, standard input and a workspace path relative to the
    working directory."""
    forked, fresh = _both("--workspace", "rel", "--as", "alice", "ask", "make me a sandwich", cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 2
    assert "make me a sandwich" in forked.stderr and forked.stderr == fresh.stderr
    text = "mail maria.garcia@example.com about run 42\n"
    forked, fresh = _both("redact", "-", cwd=tmp_path, stdin=text)
    assert (
        (forked.returncode, forked.stdout)
        == (fresh.returncode, fresh.stdout)
        == (0, "mail <EMAIL_ADDRESS> about run 42\n")
    )
    forked, fresh = _both("--no-such-option", cwd=tmp_path)  # click's usage error names the program as installed
    assert forked.returncode == fresh.returncode == 2 and forked.stderr == fresh.stderr
    assert "Try 'mlops-supervisor --help'" in forked.stderr
    forked, fresh = _both("--workspace", "rel", "--as", "alice", "policy", "show", cwd=tmp_path)
    assert forked.returncode == fresh.returncode == 0 and forked.stdout == fresh.stdout
    assert (tmp_path / "rel").is_dir()


def test_the_environment_is_the_callers_not_the_zygotes(tmp_path: Path) -> None:
    """Each command sees the environment it was given, whole: a variable set for one is gone for the next, and the
    terminal width (COLUMNS) is read per command, not fixed when the zygote imported the CLI's consoles."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "MLOPS_WORKSPACE")}
    named = run_cli([CLI, "status"], env={**base, "MLOPS_WORKSPACE": str(tmp_path / "from-env")}, cwd=tmp_path)
    assert named.returncode == 0 and str(tmp_path / "from-env") in named.stdout.replace("\n", "")
    default = run_cli([CLI, "status"], env=base, cwd=tmp_path)
    assert default.returncode == 0 and "from-env" not in default.stdout and ".mlops" in default.stdout
    ws = ["--workspace", str(tmp_path / "ws"), "ask", "help"]
    wide = run_cli([CLI, *ws], env={**base, "COLUMNS": "200"})
    narrow = run_cli([CLI, *ws], env=base)
    assert max(len(line) for line in wide.stdout.splitlines()) > 80
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80  # rich's width without a terminal


def test_a_command_past_its_timeout_is_killed_and_raises_as_subprocess_does(tmp_path: Path) -> None:
    """`monitor --every 1s` runs until stopped, a refused request a second: TimeoutExpired after the timeout, and
    then its audit log stops growing (the command is gone)."""
    audit = tmp_path / "ws" / "audit.jsonl"
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli([CLI, "--workspace", str(tmp_path / "ws"), "monitor", "ghost-model", "--every", "1s"], timeout=6)
    assert audit.exists() and audit.stat().st_size > 0  # it ran
    size = audit.stat().st_size
    time.sleep(2.5)
    assert audit.stat().st_size == size
