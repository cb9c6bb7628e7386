"""Server processes of the local backend: started in their own session, recorded, checked and ended.

Each process a model's serving home starts is recorded in ``<home>/procs/<pid>.json`` (pid,
start time, port, kind) before its /health is awaited, so a command killed while a server
starts still leaves it findable; ``end`` stops one and drops its record. A pid counts as alive
only while it runs, is no zombie, and has the start time recorded with it, so a pid the system
has since given to another process is never mistaken for ours, nor signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TypedDict

import httpx

from mlops_supervisor.policies import RunError
from mlops_supervisor.tools.core import write_json_atomic

__all__ = ["ProcessRecord", "alive", "end", "free_port", "records", "spawn", "start_time", "terminate"]


class ProcessRecord(TypedDict):
    """One started process as ``procs/<pid>.json`` records it."""

    pid: int
    started: str | None
    port: int
    kind: str


# The Popen objects of the processes this process started: kept so they are reaped, not
# garbage-collected while running (which Python reports as a ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the parenthesised command name (state first), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from /proc), or None where /proc is absent.

    Recorded with each pid so a pid the system has since given to another process is not
    mistaken for our server, and never signalled.
    """
    fields = _proc_stat(pid)
    return fields[19] if fields else None  # field 22 of stat


def alive(pid: int | None, started: str | None = None) -> bool:
    """Whether ``pid`` runs and, when ``started`` is known, is still the process we started."""
    if not pid:
        return False
    if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # not ours: a pid reused by another user's process
    if pid not in _CHILDREN:
        # a zombie child still answers kill(0); reap it if it is ours
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0
        if done:
            return False
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc: kill(0) is all there is to go on
    # a zombie is dead, whoever's child it is (another process's children cannot be reaped here)
    return fields[0] != "Z" and (started is None or fields[19] == started)


def terminate(pid: int | None, started: str | None = None, grace: float = 5.0) -> None:
    """End ``pid``'s process group if ``pid`` is still ours: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if not alive(pid, started):
        return
    assert pid is not None
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid, started):
        time.sleep(0.05)
    if alive(pid, started):
        os.killpg(pid, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=grace)


@contextmanager
def _interrupts_noted() -> Iterator[Callable[[], bool]]:
    """While a server starts, a Ctrl-C is remembered as well as raised: whether one came, as a callable.

    Python swallows a KeyboardInterrupt raised inside a finalizer ("Exception ignored in ..."), such
    as the callback of a thread pool that MLflow left for the garbage collector; the start would
    then go on as if no Ctrl-C had come. Only the main thread's default handler is wrapped.
    """
    noted = threading.Event()
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield noted.is_set
        return

    def note(signum: int, frame: FrameType | None) -> None:
        noted.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, note)
    try:
        yield noted.is_set
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def spawn(
    home: Path,
    args: list[str],
    log: str,
    *,
    port: int | None = None,
    startup_timeout: float,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start one ``_main`` process logging to ``home/log`` and wait for its /health: its record.

    ``args`` are visible to every user of the machine (``ps``, ``/proc/<pid>/cmdline``): anything
    that may hold a credential (a tracking URI with ``user:password@``, a token) goes in ``env``,
    which only the process's owner can read. The process is recorded under ``procs/`` before the
    wait, so a command killed while a server starts still leaves it findable by ``stop``; an
    error or Ctrl-C here ends it.
    """
    with _interrupts_noted() as interrupted:
        return _spawn(
            home, args, log, port=port, startup_timeout=startup_timeout, env=env or {}, interrupted=interrupted
        )


# What a server process has no use for and must not hold: it answers untrusted requests, so the shared
# database's address and password, the cluster's credentials and the supervisor's own keys stay behind.
_WITHHELD = ("MLOPS_DATABASE_URL", "PGPASSWORD", "PGPASSFILE", "KUBECONFIG", "MLOPS_KUBECONFIG", "MLOPS_KEY",
             "MLOPS_KEY_PASSPHRASE", "MLOPS_SLACK_WEBHOOK_URL", "OPENAI_API_KEY")  # fmt: skip


def _server_environment() -> dict[str, str]:
    """This process's environment less what a server must not hold (``_WITHHELD``); MLflow's own credential
    variables stay: a model server reads its model from the tracking server with them."""
    return {k: v for k, v in os.environ.items() if k not in _WITHHELD}


def _spawn(
    home: Path,
    args: list[str],
    log: str,
    *,
    port: int | None,
    startup_timeout: float,
    env: Mapping[str, str],
    interrupted: Callable[[], bool],
) -> ProcessRecord:
    port = port or free_port()
    (home / "procs").mkdir(parents=True, exist_ok=True)
    with (home / log).open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_supervisor.tools.serving._main", *args, "--port", str(port)],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env={**_server_environment(), **env},
            # its own session: a Ctrl-C of the command that started it does not reach it
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    record = ProcessRecord(pid=proc.pid, started=start_time(proc.pid), port=port, kind=args[0])
    try:
        # inside the try: a Ctrl-C that lands while the record is flushed (it is visible from the
        # rename on) must still end the process and drop the record
        write_json_atomic(home / "procs" / f"{proc.pid}.json", record)
        _await_health(proc, port, home / log, startup_timeout, interrupted)
    except BaseException:
        end(home, record)
        raise
    return record


def _await_health(
    proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float, interrupted: Callable[[], bool]
) -> None:
    """Return once ``proc`` answers /health on ``port``; raise ``RunError`` if it exits or ``timeout`` passes.

    A Ctrl-C noted while waiting raises KeyboardInterrupt here even if the first one was swallowed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if interrupted():
            raise KeyboardInterrupt
        if proc.poll() is not None:
            tail = log.read_text("utf-8", "replace")[-1500:]
            raise RunError(f"{log.parent.name} {log.stem} process exited with {proc.returncode} on start: {tail}")
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            if answer.status_code == 200 and answer.json().get("pid") == proc.pid:  # ours, not the port's last owner
                return
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.1)
    raise RunError(f"{log.parent.name} {log.stem} process did not answer /health on port {port} within {timeout:g} s")


def records(home: Path) -> list[ProcessRecord]:
    """Every process spawned under ``home`` and not yet ended, as recorded under ``procs/``."""
    return [json.loads(p.read_text("utf-8")) for p in (home / "procs").glob("*.json")]


def end(home: Path, record: ProcessRecord) -> None:
    """Stop one recorded process and drop its record."""
    terminate(record["pid"], record.get("started"))
    (home / "procs" / f"{record['pid']}.json").unlink(missing_ok=True)
