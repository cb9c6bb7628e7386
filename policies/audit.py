"""The audit chain: JSON lines, each carrying the hash of the line before it.

Appends are serialised across processes with an exclusive ``flock`` on a lock file,
so concurrent CLI processes and threads never interleave or fork the chain. A small
head file records the last sequence number and hash, so a truncated tail is caught
as surely as an edited, deleted or swapped line.

``AuditStore`` is what every user of the chain relies on: this file chain (``AuditLog``, the
embedded default) and the same chain in a PostgreSQL table (``PostgresAuditLog``, in
``_audit_postgres.py``, for hosts that share one chain) both implement it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = ["GENESIS_HASH", "AuditLog", "AuditStore", "AuditVerification", "verify_audit_log"]

GENESIS_HASH = "0" * 64

Redact = Callable[[Any], Any]


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _line_hash(record_without_hash: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(record_without_hash)).hexdigest()


class AuditStore(Protocol):
    """A hash-chained, append-only audit log, wherever it is kept."""

    @property
    def location(self) -> str:
        """Where the chain is: a file path, or ``postgresql://HOST:PORT/DB#TABLE`` (never credentials)."""
        ...

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event (its fields redacted) and return the record as written, hash included."""
        ...

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record, oldest first."""
        ...

    def verify(self) -> AuditVerification:
        """Recompute the whole chain and name the first record that breaks it."""
        ...

    def close(self) -> None:
        """Release what the store holds open (it reopens on the next use)."""
        ...


def chained_record(event: str, body: dict[str, Any], *, seq: int, prev: str) -> dict[str, Any]:
    """The record of ``event`` at ``seq`` after the line hashed ``prev``, stamped now and carrying its own hash:
    the one record format of every chain (the file's and the database's)."""
    record: dict[str, Any] = {
        "seq": seq,
        "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
        "event": event,
        **body,
        "prev": prev,
    }
    record["hash"] = _line_hash(record)
    return record


class AuditLog:
    """An append-only, hash-chained JSON-lines log at ``path``.

    Every field passes through ``redact`` before it is written.
    """

    def __init__(self, path: Path, *, redact: Redact | None = None, fsync: bool = False) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._redact = redact
        self._fsync = fsync
        self._open: tuple[int, int, int] | None = None

    @property
    def location(self) -> str:
        """The log file's path."""
        return str(self.path)

    def verify(self) -> AuditVerification:
        """``verify_audit_log`` of this file."""
        return verify_audit_log(self.path)

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event and return the record as written (hash included)."""
        body = self._redact(fields) if self._redact is not None else fields
        lock_fd, log_fd, head_fd = self._fds()
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        try:
            seq, prev = self._read_head(head_fd)
            record = chained_record(event, body, seq=seq + 1, prev=prev)
            os.write(log_fd, _canonical(record) + b"\n")
            if self._fsync:
                os.fsync(log_fd)
            # Fixed width, written in place: one small pwrite, no rename per line.
            os.pwrite(head_fd, f"{record['seq']:020d} {record['hash']}\n".encode("ascii"), 0)
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        return record

    def _fds(self) -> tuple[int, int, int]:
        # Opened once per AuditLog and kept: O_APPEND keeps concurrent writers safe, and the
        # flock on the lock file orders them, so one chain results across processes.
        if self._open is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open = (
                os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600),
                os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                os.open(self.head_path, os.O_RDWR | os.O_CREAT, 0o600),
            )
        return self._open

    @staticmethod
    def _read_head(head_fd: int) -> tuple[int, str]:
        raw = os.pread(head_fd, 128, 0).split()
        if len(raw) != 2:
            return 0, GENESIS_HASH
        return int(raw[0]), raw[1].decode("ascii")

    def close(self) -> None:
        """Close the file descriptors (they reopen on the next append)."""
        if self._open is not None:
            for fd in self._open:
                os.close(fd)
            self._open = None

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in order; lines that do not parse are skipped (``verify`` reports them)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue
        except FileNotFoundError:
            return


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of checking a chain: ``bad_line`` is 1-based, ``None`` when intact."""

    ok: bool
    lines: int
    bad_line: int | None = None
    problem: str = ""


def verify_audit_log(path: Path) -> AuditVerification:
    """Recompute the chain and name the first line that breaks it."""
    path = Path(path)
    head_path = path.with_name(path.name + ".head")
    if not path.exists():
        if head_path.exists():
            return AuditVerification(False, 0, 1, f"{path} is missing but its head file records entries")
        return AuditVerification(True, 0)
    prev = GENESIS_HASH
    count = 0
    with open(path, encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            count = number
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                return AuditVerification(False, number, number, "line is not valid JSON")
            if not isinstance(record, dict) or "hash" not in record:
                return AuditVerification(False, number, number, "line is not an audit record")
            if record.get("seq") != number:
                return AuditVerification(
                    False,
                    number,
                    number,
                    f"sequence number is {record.get('seq')!r}, expected {number}: a line was deleted, "
                    "inserted or moved",
                )
            if record.get("prev") != prev:
                return AuditVerification(False, number, number, "previous-hash link does not match the line before")
            claimed = record.pop("hash")
            if _line_hash(record) != claimed:
                return AuditVerification(False, number, number, "content does not match its hash: the line was edited")
            prev = claimed
    try:
        head_seq, head_hash = head_path.read_text("ascii").split()
    except (FileNotFoundError, ValueError):
        return AuditVerification(
            count == 0, count, None if count == 0 else count, "" if count == 0 else "head file is missing"
        )
    if int(head_seq) != count or head_hash != prev:
        return AuditVerification(
            False,
            count,
            count + 1 if int(head_seq) > count else count,
            f"the log ends at line {count} but its head records {head_seq} lines: lines were cut "
            "from the end or the head was altered",
        )
    return AuditVerification(True, count)
