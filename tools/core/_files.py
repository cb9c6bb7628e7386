"""Atomic writes: a state file or a directory appears whole, or not at all, even across a crash.

Every state file of the workspace (serving state and routes, canary progress, pipeline
pointers) is written here: to a temporary file in the same directory, flushed to disk,
renamed over the old one, and the directory flushed so the rename itself survives a crash.
A reader therefore sees the old content or the new, never a torn file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

__all__ = ["publish_dir", "write_atomic", "write_json_atomic"]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` (text as UTF-8) in one step; its directory is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: Path, value: Any) -> None:
    """Replace ``path`` with ``value`` as indented JSON (values JSON lacks, such as dates, as text)."""
    write_atomic(path, json.dumps(value, indent=2, default=str))


def publish_dir(staging: Path, final: Path) -> None:
    """Move a fully written directory into place; content-addressed, so an existing one is equal.

    The files inside ``staging`` are flushed first, so the directory that appears is complete on disk.
    """
    for file in staging.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)
        return
    _fsync_dir(final.parent)
