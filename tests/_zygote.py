"""A fork server for the CLI processes the tests start: the CLI's imports paid once per test worker, not per call.

Importing the CLI with what a request needs (LangGraph, MLflow, scikit-learn, Presidio and its spaCy
model) costs about 3 s of CPU; the command itself is often under 1 s. The suite starts well over a
hundred CLI processes, so most of its CLI time was imports (``ask status``: 4.4 CPU-s started fresh,
0.6 s forked). Here one process per test worker (the zygote, ``python -m tests._zygote``) imports all
that once, then forks a child for each command.

The child is still a process of its own, as ``subprocess.run([CLI, ...])`` makes one: its own pid,
arguments, environment, working directory, standard input, output and error, exit status (a signal
as ``-N``), its ``atexit`` handlers run and its threads joined at exit. What it shares with the other
commands is only what was imported before the fork, read-only. Tests of what a fresh process imports,
of terminals (the chat), of signals and of the packaged entry point start real processes.

Each command's fork is made by a waiter, itself forked from the zygote, that reports the child's pid,
waits for it and sends back its exit status and output; the zygote only accepts and forks, so
commands from one worker may overlap. The zygote leaves when the test worker that started it closes
its standard input (it exits, or dies).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

# What the CLI's heavy commands import, loaded before any fork.
PRELOAD = (
    "mlops_supervisor._cli",
    "mlops_supervisor._api",
    "mlops_supervisor._graph",
    "mlops_supervisor._pipeline",
    "mlops_supervisor._demo",
    "mlops_supervisor.tools._catalogue",
    "mlops_supervisor.policies._presidio",
    "mlops_supervisor.policies._prose",
    "mlflow.tracking",
    "mlflow.sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    from mlops_supervisor.policies.pii import _engine

    _engine()  # Presidio's analyzer and the spaCy model
    if threading.active_count() != 1:  # a fork copies only the forking thread: refuse to fork with others
        raise SystemExit(f"zygote: {threading.active_count()} threads after the imports; cannot fork safely")


def _child(request: dict[str, Any], stdin: str, out: str, err: str) -> None:
    """Become the command: its directory, environment, standard streams and arguments; never returns."""
    code = 1
    try:
        # What the zygote's objects would clean up at its exit (temporary folders) is the zygote's, not ours.
        weakref.finalize._registry.clear()  # type: ignore[attr-defined]
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, (path, flags) in enumerate(
            ((stdin, os.O_RDONLY), (out, os.O_WRONLY | os.O_TRUNC), (err, os.O_WRONLY | os.O_TRUNC))
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = list(request["argv"])
        # as the entry point script runs it: click names the program after argv[0] (not `python -m tests....`)
        sys.modules["__main__"].__package__ = None
        from mlops_supervisor._cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - printed and exit 1, as the interpreter does with an uncaught one
            import traceback

            traceback.print_exc()
            code = 1
        # As the interpreter ends: threads joined, then atexit handlers (MLflow's, logging's flush).
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - the child's own setup or exit failed: say why
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code & 0xFF)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _waiter(conn: socket.socket) -> None:
    """Run one command: fork it, report its pid, wait for it, send its status and output; never returns."""
    try:
        with conn.makefile("rb") as reader:
            request = json.loads(reader.readline())
        tmp = tempfile.mkdtemp(prefix="zygote-")  # not a TemporaryDirectory: the child must not clean it up
        try:
            stdin, out, err = (str(Path(tmp, name)) for name in ("in", "out", "err"))
            Path(stdin).write_text(request["input"] or "", "utf-8")
            Path(out).touch()
            Path(err).touch()
            pid = os.fork()
            if pid == 0:
                conn.close()
                _child(request, stdin, out, err)
            _send(conn, {"pid": pid})
            _, status = os.waitpid(pid, 0)
            _send(
                conn,
                {
                    "returncode": os.waitstatus_to_exitcode(status),
                    "stdout": Path(out).read_bytes().decode("utf-8", "replace"),
                    "stderr": Path(err).read_bytes().decode("utf-8", "replace"),
                },
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the test stopped waiting (its timeout) and killed the command: nobody is left to answer
    except BaseException:  # noqa: BLE001 - the test sees no answer; this says why
        import traceback

        traceback.print_exc()
    finally:
        os._exit(0)


def serve(path: str) -> None:
    """Import, then fork a waiter per connection on the Unix socket ``path`` until standard input closes."""
    _preload()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the waiters are reaped by the kernel
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        readable, _, _ = select.select([server, sys.stdin.fileno()], [], [])
        if sys.stdin.fileno() in readable and not os.read(sys.stdin.fileno(), 1024):
            return  # the test worker is gone
        if server in readable:
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the waiter waits for its command itself
                _waiter(conn)
            conn.close()


class Zygote:
    """The client: ``run(argv, env=..., cwd=..., timeout=...)`` answers as ``subprocess.run`` with ``capture_output``
    and ``text`` would (``TimeoutExpired`` after killing the command)."""

    def __init__(self) -> None:
        # a Unix socket's path has room for about 100 bytes: a long TMPDIR (a test's own) falls back to /tmp
        short = len(tempfile.gettempdir()) < 60 or not Path("/tmp").is_dir()
        self._dir = tempfile.TemporaryDirectory(prefix="zygote-", dir=None if short else "/tmp")
        self.path = str(Path(self._dir.name, "socket"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._zygote", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
            # without COLUMNS: rich would fix the width of the CLI's consoles, made at import, to the zygote's
            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line != b"ready\n":
            self.close()
            raise RuntimeError(f"the CLI zygote did not start (exit {self.proc.wait()}); its stderr says why")

    def run(
        self,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str | Path | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        request = {"argv": argv, "env": env, "cwd": str(cwd or os.getcwd()), "input": input}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(self.path)
            _send(conn, request)
            conn.settimeout(timeout)
            with conn.makefile("rb") as reader:
                pid = json.loads(reader.readline())["pid"]
                try:
                    line = reader.readline()
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(argv, timeout) from None
        if not line:
            raise RuntimeError(f"the CLI zygote's waiter for {argv} ended without an answer")
        done = json.loads(line)
        return subprocess.CompletedProcess(argv, done["returncode"], done["stdout"], done["stderr"])

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._dir.cleanup()


_shared: Zygote | None = None


def run_cli(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    input: str | None = None,
    timeout: float = 120,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True, ...)`` for a CLI command (``argv[0]`` is the
    ``mlops-supervisor`` entry point, only ``argv[1:]`` is read), forked from this process's zygote, started on
    first use. ``fresh=True``, or ``MLOPS_TEST_FRESH_CLI=1`` for every command, runs ``argv`` from scratch."""
    global _shared
    env = dict(os.environ if env is None else env)
    if fresh or os.environ.get("MLOPS_TEST_FRESH_CLI") == "1":
        return subprocess.run(
            argv, input=input, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
        )
    if _shared is None:
        _shared = Zygote()
        atexit.register(_shared.close)
    return _shared.run(argv, env=env, cwd=cwd, input=input, timeout=timeout)


if __name__ == "__main__":
    serve(sys.argv[1])
