"""A lock per registered model, across processes, around every check-then-change of its aliases and traffic."""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["model_lock"]

_HELD = threading.local()  # lock paths this thread holds, with their nesting depth


@contextmanager
def model_lock(workspace: Path, model: str) -> Iterator[None]:
    """An exclusive lock per registered model across processes, around check-then-change of its aliases.

    Re-entrant within a thread: a canary step that fails its analysis rolls back under the lock
    it already holds. (A second ``flock`` on a new descriptor of the same file would wait on
    its own process for ever.)
    """
    name = f"model-{hashlib.sha256(model.encode()).hexdigest()[:16]}.lock"
    path = os.path.abspath(Path(workspace) / "locks" / name)  # one key however the workspace is spelt
    held: dict[str, int] = _HELD.__dict__.setdefault("depth", {})
    if held.get(path):
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held[path] = 1
        try:
            yield
        finally:
            held[path] = 0
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
