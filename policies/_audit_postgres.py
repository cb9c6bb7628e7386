"""The audit chain in a PostgreSQL table, for several hosts sharing one chain.

The records, their canonical bytes and their hashes are exactly those of the file chain
(``policies/audit.py``). Each row keeps the canonical JSON text that was hashed, so the chain
stays verifiable byte for byte (``jsonb`` would reorder keys and renormalise numbers).

Appends are serialised across processes and hosts by a transaction-scoped advisory lock: each
append reads the head, inserts the next row and moves the head in one transaction. The table is
append-only: a trigger refuses UPDATE, DELETE and TRUNCATE (PUBLIC's privileges for them are
revoked too), and a second trigger only lets the head move forward by one. ``verify`` does not
trust any of that: it recomputes the whole chain, so a row edited or removed by someone who
disabled the triggers is named like a tampered line of the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlops_supervisor.policies.audit import GENESIS_HASH, AuditVerification, _canonical, _line_hash, chained_record
from mlops_supervisor.policies.errors import RunError, UsageError

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresAuditLog", "check_database_url", "postgres_location"]

Redact = Callable[[Any], Any]

_SCHEMES = ("postgresql", "postgres")
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_PAGE = 1000


def check_database_url(url: str) -> str:
    """``url`` when it names a PostgreSQL database (``postgresql://`` or ``postgres://``); else ``UsageError``
    naming the scheme given (never the URL, which may hold a password)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise UsageError(
            f"MLOPS_DATABASE_URL has the scheme {scheme or '(none)'!r}; it must be a PostgreSQL URL, "
            "postgresql://USER@HOST:PORT/DATABASE (or postgres://...), with the password in PGPASSWORD or ~/.pgpass"
        )
    return url


def postgres_location(url: str) -> str:
    """``postgresql://HOST:PORT/DATABASE`` for ``url``: where it points, with no user name or password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(check_database_url(url))
    except psycopg.Error:  # a malformed URL: its text may hold a password, so it is not repeated
        raise UsageError(
            "MLOPS_DATABASE_URL is not a valid PostgreSQL URL; write postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    return f"postgresql://{host}:{port}/{parts.get('dbname') or parts.get('user') or 'postgres'}"


def connect(url: str, *, what: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A connection to ``url``; ``RunError`` naming host, port and database and what to check when it fails."""
    import psycopg

    where = postgres_location(url)
    try:
        return psycopg.connect(check_database_url(url), connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        # libpq's message says which (refused, timeout, authentication, no such database); it never holds the password
        reason = " ".join(str(exc).split())
        raise RunError(
            f"cannot open {what} at {where} (MLOPS_DATABASE_URL): {reason}. Check that the server is running and "
            "reachable from here, that the database exists, and the role and its password (PGPASSWORD or ~/.pgpass)"
        ) from None


def _lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``, the same in every process."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


class PostgresAuditLog:
    """The hash-chained audit log in table ``table`` (and its head in ``<table>_head``) of the database at ``url``.

    The tables, triggers and revocations are created on first use, under an advisory lock, so any
    number of processes may open the same chain at once. Every field passes through ``redact``.
    """

    def __init__(self, url: str, *, redact: Redact | None = None, table: str = "mlops_audit") -> None:
        if not _TABLE.match(table):
            raise UsageError(f"audit table name {table!r} is not allowed; use lower-case letters, digits and '_'")
        self.table = table
        self.location = f"{postgres_location(url)}#{table}"
        self._redact = redact
        self._url = url
        self._key = _lock_key(f"mlops-audit:{table}")
        self._lock = threading.Lock()  # one connection: the supervisor's worker thread and its caller share it
        self._conn: psycopg.Connection[Any] | None = connect(url, what="the audit chain", autocommit=True)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _db(self) -> psycopg.Connection[Any]:
        # closed, or lost (a server restart, an idle disconnect): reopened on the next use, like the file
        # chain's descriptors
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = connect(self._url, what="the audit chain", autocommit=True)
        return self._conn

    @contextmanager
    def _reporting(self, action: str) -> Iterator[None]:
        """A database error inside the block leaves as one ``RunError`` naming the chain's location."""
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise RunError(
                f"{action} the audit chain at {self.location} failed: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}; check the database is up and the role's "
                "privileges on the audit tables"
            ) from None

    def _setup(self) -> None:
        t, head = self.table, f"{self.table}_head"
        conn = self._db()
        with conn.transaction():
            # Serialised: CREATE ... IF NOT EXISTS races with itself in concurrent sessions.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(f"mlops-audit-setup:{t}"),))
            for statement in (
                f"CREATE TABLE IF NOT EXISTS {t} (seq bigint PRIMARY KEY CHECK (seq > 0), "
                "hash text NOT NULL UNIQUE, record text NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {head} (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
                "seq bigint NOT NULL, hash text NOT NULL)",
                f"INSERT INTO {head} (seq, hash) VALUES (0, '{GENESIS_HASH}') ON CONFLICT DO NOTHING",
                f"CREATE OR REPLACE FUNCTION {t}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'the audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$",
                f"CREATE OR REPLACE FUNCTION {t}_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.seq <> OLD.seq + 1 THEN RAISE EXCEPTION 'the audit head only moves forward by one: "
                "% to % refused', OLD.seq, NEW.seq; END IF; RETURN NEW; END $$",
                f"CREATE OR REPLACE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
                f"FOR EACH ROW EXECUTE FUNCTION {t}_refuse()",
                f"CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_refuse()",
                f"CREATE OR REPLACE TRIGGER {head}_keep BEFORE DELETE ON {head} "
                f"FOR EACH ROW EXECUTE FUNCTION {t}_refuse()",
                f"CREATE OR REPLACE TRIGGER {head}_no_truncate BEFORE TRUNCATE ON {head} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {t}_refuse()",
                f"CREATE OR REPLACE TRIGGER {head}_forward BEFORE UPDATE ON {head} "
                f"FOR EACH ROW EXECUTE FUNCTION {t}_head_forward()",
                f"REVOKE UPDATE, DELETE, TRUNCATE ON {t} FROM PUBLIC",
                f"REVOKE DELETE, TRUNCATE ON {head} FROM PUBLIC",
            ):
                conn.execute(statement.encode("utf-8"))  # identifiers checked above; DDL takes no parameters

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event and return the record as written (hash included)."""
        body = self._redact(fields) if self._redact is not None else fields
        with self._lock, self._reporting("appending to"):
            conn = self._db()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
                row = conn.execute(f"SELECT seq, hash FROM {self.table}_head".encode()).fetchone()
                seq, prev = (int(row[0]), str(row[1])) if row else (0, GENESIS_HASH)
                record = chained_record(event, body, seq=seq + 1, prev=prev)
                conn.execute(
                    f"INSERT INTO {self.table} (seq, hash, record) VALUES (%s, %s, %s)".encode(),
                    (record["seq"], record["hash"], _canonical(record).decode("utf-8")),
                )
                conn.execute(
                    f"UPDATE {self.table}_head SET seq = %s, hash = %s".encode(), (record["seq"], record["hash"])
                )
        return record

    def _head(self) -> tuple[int, str] | None:
        """(seq, hash) of the head row as committed now; None when it is missing."""
        with self._lock, self._reporting("reading"):
            row = self._db().execute(f"SELECT seq, hash FROM {self.table}_head".encode()).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _rows(self, upto: int | None = None) -> Iterator[tuple[int, str, str]]:
        """(seq, hash, record text) of every row in order (up to seq ``upto``), a page at a time."""
        after = 0
        last = upto if upto is not None else 2**62
        while True:
            with self._lock, self._reporting("reading"):
                rows = (
                    self._db()
                    .execute(
                        f"SELECT seq, hash, record FROM {self.table} WHERE seq > %s AND seq <= %s "
                        "ORDER BY seq LIMIT %s".encode(),
                        (after, last, _PAGE),
                    )
                    .fetchall()
                )
            for seq, hashed, text in rows:
                yield int(seq), str(hashed), str(text)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in order; rows that do not parse are skipped (``verify`` reports them)."""
        for _seq, _hash, text in self._rows():
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record

    def verify(self) -> AuditVerification:
        """Recompute the chain up to its head and name the first row (by ``seq``) that breaks it.

        The head is read first: an append commits its row and the head's move together, so the
        rows up to that head are all there, and rows other hosts append meanwhile (beyond it) are
        not mistaken for a tampered tail.
        """
        head = self._head()
        if head is None:
            return AuditVerification(False, 0, 1, f"the head row of {self.table}_head is missing")
        head_seq, head_hash = head
        prev, count = GENESIS_HASH, 0
        for seq, hashed, text in self._rows(upto=head_seq):
            count += 1
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                return AuditVerification(False, count, count, f"row seq {seq} is not valid JSON")
            if not isinstance(record, dict) or "hash" not in record:
                return AuditVerification(False, count, count, f"row seq {seq} is not an audit record")
            if seq != count or record.get("seq") != count:
                return AuditVerification(
                    False,
                    count,
                    count,
                    f"row seq {seq} (record seq {record.get('seq')!r}) where {count} was expected: "
                    "a row was deleted, inserted or renumbered",
                )
            if record.get("prev") != prev:
                return AuditVerification(False, count, count, "previous-hash link does not match the row before")
            claimed = record.pop("hash")
            if _line_hash(record) != claimed or hashed != claimed:
                return AuditVerification(False, count, count, "content does not match its hash: the row was edited")
            prev = claimed
        if head_seq != count or head_hash != prev:
            return AuditVerification(
                False,
                count,
                count + 1 if head_seq > count else count,
                f"the chain ends at seq {count} but its head records {head_seq}: rows were removed from the end "
                "or the head was altered",
            )
        return AuditVerification(True, count)

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
