"""The traffic router of one model endpoint: a small HTTP/1.1 reverse proxy on asyncio.

It splits ``POST /invocations`` between versions by weight, forwards each request over a
kept-alive connection to the chosen version's model server, and answers with the server's
status and body plus an ``x-model-version`` header and an ``x-request-id`` header: a fresh id
per request (a random UUID, 32 hex digits; a caller's own ``x-request-id`` is echoed as
``x-client-request-id``, never trusted as the id). Around that it keeps per-version Prometheus metrics
(``prometheus_client``: requests by status, a latency histogram) at ``GET /metrics``, the
prediction log (``_predictions``: one line per record of every 200 answer, with its request id,
version, prediction and class probabilities, no features) under ``predictions/`` beside its
routes file, a redacted random sample of requests and predictions for drift checks, and
``GET /health``. ``POST /feedback`` takes labels that arrive later for the request ids it gave
(``{"feedback": [{"request_id", "row", "label", ...}]}``), checked and stored off the event
loop as ``_feedback.ingest_feedback`` does for a file, when the policy in force at the last
deploy lets it (the feedback contract's ``post_feedback``; a 403 naming the policy otherwise),
with a ``feedback`` line in the workspace's audit log whatever the outcome. Its routes live in
a JSON file it re-reads when the file changes, so a weight change is a file write, not a
restart. The files sit in the model's serving home (``<workspace>/serving/<model>/routes.json``),
which is where the router finds the rest.

Why a hand-written proxy rather than an ASGI app with an HTTP client: the router sits on
every request, and with uvicorn, Starlette and aiohttp it spent about as much CPU per
request as the model server behind it, so it kept 47 % of the server's throughput
(BENCHMARKS.md). Parsing stays with a well-kept library (``httptools``, llhttp, which is what
uvicorn uses); what is ours is only the plumbing between two parsers: one callback chain per
request, no task, no framework objects. Requests on one connection are answered in order;
pipelined ones wait their turn.
"""

from __future__ import annotations

import asyncio
import bisect
import http
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mlops_supervisor.policies import AuditLog, Redactor, redact_value
from mlops_supervisor.tools.serving._backend import MAX_BODY
from mlops_supervisor.tools.serving._predictions import PREDICTIONS_DIR, PredictionLog, answer_lines

__all__ = ["Router", "serve_router", "start_router"]

UPSTREAM_TIMEOUT = 10.0
SAMPLES_LIMIT = 50 * 1024 * 1024
_JSON = b"application/json"
_CLIENT_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # a caller's id is echoed only when it is short, printable ASCII
Done = Callable[[int, bytes, bytes], None]  # status, content type, body


def _response(
    status: int, body: bytes, *, content_type: bytes = _JSON, extra: bytes = b"", close: bool = False
) -> bytes:
    try:
        reason = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b"Unknown"
    head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
        status,
        reason,
        content_type,
        len(body),
        extra,
        b"connection: close\r\n" if close else b"",
    )
    return head + body


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _request_id() -> str:
    """A random (version 4) UUID as 32 lowercase hex digits, as ``uuid.uuid4().hex`` gives, at a third of its cost."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # the version
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return raw.hex()


class _Upstream(asyncio.Protocol):
    """One kept-alive connection to a model server, carrying one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: Done | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.content_type = _JSON
        self.body: list[bytes] = []
        self.answered = False  # some byte of the current response arrived
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, done: Done, timeout: float) -> None:
        assert self.transport is not None
        self.done, self.body, self.answered, self.content_type = done, [], False, _JSON
        self.timer = self.pool.loop.call_later(timeout, self._timed_out, timeout)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(502, f"version {self.pool.version} sent a malformed response: {exc}")

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        done, self.done = self.done, None
        if self.timer is not None:
            self.timer.cancel()
        if done is None:  # a response nobody asked for: the connection is not to be trusted
            self.close()
            return
        if self.parser.should_keep_alive():
            self.pool.idle.append(self)
        else:
            self.close()
        done(self.parser.get_status_code(), self.content_type, b"".join(self.body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.done is not None:
            reason = str(exc) if exc else "the connection closed before the response"
            if not self.answered and self.pool.retry(self):
                return
            self._fail(502, f"version {self.pool.version} unreachable: {reason}")

    def _timed_out(self, timeout: float) -> None:
        self._fail(504, f"version {self.pool.version} did not answer within {timeout:g} s")

    def _fail(self, status: int, message: str) -> None:
        done, self.done = self.done, None
        if self.timer is not None:
            self.timer.cancel()
        self.close()
        if done is not None:
            done(status, _JSON, _error(message))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Kept-alive connections to one model server (one version)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, version: str, url: str) -> None:
        self.loop, self.version, self.url = loop, version, url
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.idle: list[_Upstream] = []
        self.pending: dict[_Upstream, tuple[bytes, Done]] = {}

    def request(self, body: bytes, content_type: bytes, done: Done) -> None:
        head = b"POST /invocations HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n" % (
            self.host.encode(),
            self.port,
            content_type,
            len(body),
        )
        self._send(head + body, done, reused_ok=True)

    def _send(self, request: bytes, done: Done, *, reused_ok: bool) -> None:
        while reused_ok and self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                # a kept-alive connection the server closed meanwhile fails before any byte of
                # an answer; that one request is sent again, once, on a fresh connection
                self.pending[conn] = (request, done)
                conn.send(request, self._settled(conn, done), UPSTREAM_TIMEOUT)
                return
        self.loop.create_task(self._connect_and_send(request, done))

    def _settled(self, conn: _Upstream, done: Done) -> Done:
        def settled(status: int, content_type: bytes, body: bytes) -> None:
            self.pending.pop(conn, None)
            done(status, content_type, body)

        return settled

    def retry(self, conn: _Upstream) -> bool:
        """Send the request a reused connection lost before any answer once more; whether it will."""
        sent = self.pending.pop(conn, None)
        if sent is None:
            return False
        conn.done = None
        if conn.timer is not None:
            conn.timer.cancel()
        self._send(*sent, reused_ok=False)
        return True

    async def _connect_and_send(self, request: bytes, done: Done) -> None:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Upstream(self), self.host, self.port), UPSTREAM_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            done(502, _JSON, _error(f"version {self.version} unreachable: {exc or type(exc).__name__}"))
            return
        conn.send(request, done, UPSTREAM_TIMEOUT)

    def close(self) -> None:
        for conn in [*self.idle, *self.pending]:
            conn.close()
        self.idle.clear()


class _Routes:
    """The routes file, re-read when it changes, with the weighted choice precomputed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime = -1.0
        self.versions: dict[str, dict[str, Any]] = {}
        self.sample_rate = 0.1
        self.names: list[str] = []
        self.cumulative: list[float] = []

    def current(self) -> dict[str, dict[str, Any]]:
        mtime = os.stat(self.path).st_mtime
        if mtime != self.mtime:
            routes = json.loads(self.path.read_text("utf-8"))
            self.versions = routes["versions"]
            self.sample_rate = float(routes.get("sample_rate", 0.1))
            taking = [(v, float(r["weight"])) for v, r in self.versions.items() if r.get("weight", 0) > 0]
            self.names = [v for v, _ in taking]
            total = 0.0
            self.cumulative = []
            for _, weight in taking:
                total += weight
                self.cumulative.append(total)
            self.mtime = mtime
        return self.versions

    def pick(self, draw: float) -> str | None:
        """The version a uniform ``draw`` in [0, 1) lands on by weight; None when none takes traffic."""
        self.current()
        if not self.names:
            return None
        return self.names[min(bisect.bisect_right(self.cumulative, draw * self.cumulative[-1]), len(self.names) - 1)]


class Router:
    """The proxy's state: routes, upstream pools, metrics, the prediction log and the sample file.

    The model's serving home is the routes file's folder: the prediction log goes under its
    ``predictions/`` (or ``predictions_dir``), feedback under it (``_feedback``), and the audit
    log is the workspace's (``<home>/../../audit.jsonl``, or ``audit_path``).
    """

    def __init__(
        self,
        routes_path: Path,
        *,
        samples_path: Path,
        redactor: Redactor,
        predictions_dir: Path | None = None,
        audit_path: Path | None = None,
    ) -> None:
        self.routes = _Routes(routes_path)
        self.home = Path(routes_path).parent
        self.samples_path = samples_path
        self.redactor = redactor
        self.predictions = PredictionLog(predictions_dir or self.home / PREDICTIONS_DIR)
        self.audit_path = audit_path or self.home.parent.parent / "audit.jsonl"
        self._audit: AuditLog | None = None
        self._audit_lock = threading.Lock()  # one AuditLog's descriptors are shared by the executor's threads
        # feedback is checked and stored here, off the event loop; ``close`` waits for it before the audit log closes
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="feedback")
        self._version_numbers: dict[str, int | str] = {}
        self.picker = random.Random()
        self.pools: dict[tuple[str, str], _Pool] = {}
        self.callers: set[_Caller] = set()
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_requests",
            "Requests by model version and HTTP status",
            ["version", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mlops_request_latency_seconds",
            "Latency through the router, by model version",
            ["version"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def pool(self, loop: asyncio.AbstractEventLoop, version: str) -> _Pool:
        url = self.routes.versions[version]["url"]
        pool = self.pools.get((version, url))
        if pool is None:
            pool = self.pools[(version, url)] = _Pool(loop, version, url)
        return pool

    def record(self, version: str, status: int, seconds: float) -> None:
        histogram = self._histograms.get(version)
        if histogram is None:
            histogram = self._histograms[version] = self.latency.labels(version)
        histogram.observe(seconds)
        counter = self._counters.get((version, status))
        if counter is None:
            counter = self._counters[(version, status)] = self.requests.labels(version, str(status))
        counter.inc()

    def log_predictions(self, request_id: str, version: str, content: bytes) -> None:
        """Append the prediction log's lines for one successful answer (nothing for an answer without predictions)."""
        number = self._version_numbers.get(version)
        if number is None:
            number = self._version_numbers[version] = int(version) if version.isdigit() else version
        lines = answer_lines(request_id, number, time.time(), content)
        if lines:
            self.predictions.append(lines)

    def maybe_sample(self, version: str, body: bytes, content: bytes) -> None:
        """Append a redacted request and its predictions for ``sample_rate`` of the successful ones."""
        if self.picker.random() >= self.routes.sample_rate:
            return
        try:
            if self.samples_path.stat().st_size > SAMPLES_LIMIT:
                return
        except FileNotFoundError:
            pass
        try:
            records = json.loads(body).get("dataframe_records")
            predictions = json.loads(content).get("predictions")
        except (ValueError, AttributeError):
            return
        if not isinstance(records, list):
            return
        line = {"ts": time.time(), "version": version, "records": records, "predictions": predictions}
        redacted = self.redactor.redact_text(json.dumps(line, default=str))
        with self.samples_path.open("a", encoding="utf-8") as fh:
            fh.write(redacted + "\n")

    def take_feedback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Check and store one ``POST /feedback`` body (run off the event loop); the status and answer.

        Taken only when the feedback contract's ``post_feedback`` (written by the deploy from the
        policy then in force) allows it: 403 naming the policy otherwise. Audited as a
        ``feedback`` line (redacted) whatever the outcome: ``ok``, ``invalid_input`` (400),
        ``refused`` (403) or ``error`` (500).
        """
        from mlops_supervisor.policies import InvalidInputError
        from mlops_supervisor.tools.serving._feedback import feedback_frame, ingest_feedback, read_feedback_contract

        try:
            contract = read_feedback_contract(self.home)
            permission = contract.get("post_feedback")
            if not isinstance(permission, dict) or permission.get("allowed") is not True:
                message = _feedback_refusal(self.home.name, permission)
                self._audit_line(outcome="refused", message=message)
                return 403, {"error": message}
            window = permission.get("label_window_hours")
            result = ingest_feedback(
                self.home,
                feedback_frame(body),
                redactor=self.redactor,
                source="POST /feedback",
                label_window_hours=float(window) if isinstance(window, int | float) else None,
            )
        except InvalidInputError as exc:
            self._audit_line(outcome="invalid_input", reason_code=exc.reason_code, message=str(exc))
            return 400, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the caller gets a 500 that says why, and the audit log a line
            message = f"feedback not stored: {type(exc).__name__}: {exc}"
            self._audit_line(outcome="error", message=message)
            return 500, {"error": message}
        self._audit_line(outcome="ok", accepted=result["accepted"], batch=result["batch"])
        return 200, {"accepted": result["accepted"], "batch": result["batch"]}

    def _audit_line(self, **fields: Any) -> None:
        with self._audit_lock:
            if self._audit is None:
                self._audit = AuditLog(self.audit_path, redact=lambda value: redact_value(self.redactor, value))
            self._audit.append("feedback", model=self.home.name, origin="router", pid=os.getpid(), **fields)

    def close(self) -> None:
        """Close connections and files; a feedback batch being checked finishes (and is audited) first.

        Batches still queued are dropped: nothing of them was stored, and their callers' connections
        are closed without an answer.
        """
        for caller in list(self.callers):
            caller.close()
        for pool in self.pools.values():
            pool.close()
        self.predictions.close()
        self.executor.shutdown(wait=True, cancel_futures=True)
        with self._audit_lock:
            if self._audit is not None:
                self._audit.close()
                self._audit = None


def _feedback_refusal(model: str, permission: Any) -> str:
    """Why the router takes no labels for ``model``: its contract's ``post_feedback`` says no, or says nothing."""
    if not isinstance(permission, dict):
        return (
            f"POST /feedback is refused for {model!r}: its feedback contract does not say whether the policy lets "
            "the router take labels (it predates that check); redeploy the model, or send the labels with "
            "`mlops-supervisor feedback MODEL FILE`"
        )
    return (
        f"POST /feedback is refused for {model!r}: {permission.get('reason', 'the policy does not allow it')} "
        f"(policy {permission.get('policy', 'unknown')}, as in force at the model's last deploy)"
    )


class _Caller(asyncio.Protocol):
    """One client connection: requests are parsed as they arrive and answered in order."""

    def __init__(self, router: Router, loop: asyncio.AbstractEventLoop) -> None:
        self.router, self.loop = router, loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        # method, path, content type, body, keep-alive, the caller's own x-request-id
        self.queue: deque[tuple[bytes, bytes, bytes, bytes, bool, bytes]] = deque()
        self.busy = False
        self.url = b""
        self.content_type = _JSON
        self.client_id = b""
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.router.callers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.router.callers.discard(self)
        self.queue.clear()  # nobody is left to answer
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.busy:  # an answer is still owed first; out of order would mislead the caller
                self.close()
            else:
                self._write(_response(400, _error(f"malformed HTTP request: {exc}"), close=True), close=True)

    def on_message_begin(self) -> None:
        self.url, self.content_type, self.body, self.size, self.too_large = b"", _JSON, [], 0, False
        self.client_id = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif name == b"x-request-id" and _CLIENT_ID.fullmatch(value):
            self.client_id = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY:
            self.too_large = True
            self.body = []
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"" if self.too_large else b"".join(self.body)
        method = self.parser.get_method() if not self.too_large else b"TOO_LARGE"
        self.queue.append(
            (
                method,
                self.url.split(b"?", 1)[0],
                self.content_type,
                body,
                self.parser.should_keep_alive(),
                self.client_id,
            )
        )
        if len(self.queue) > 1 and self.transport is not None and not self.paused:
            self.transport.pause_reading()  # pipelined requests wait; stop reading more meanwhile
            self.paused = True
        if not self.busy:
            self._next()

    def _next(self) -> None:
        if not self.queue:
            self.busy = False
            if self.paused and self.transport is not None:
                self.transport.resume_reading()
                self.paused = False
            return
        self.busy = True
        method, path, content_type, body, keep, client_id = self.queue.popleft()
        try:
            self._dispatch(method, path, content_type, body, keep, client_id)
        except Exception as exc:  # noqa: BLE001 - the caller gets a 500 that says why; the router stays up
            self._answer(500, _error(f"router error: {type(exc).__name__}: {exc}"), keep=False)

    def _dispatch(
        self, method: bytes, path: bytes, content_type: bytes, body: bytes, keep: bool, client_id: bytes
    ) -> None:
        request_id, ids = "", b""
        if path == b"/invocations":  # every answer to it carries a fresh request id, and the caller's own
            request_id = _request_id()
            ids = b"x-request-id: %s\r\n" % request_id.encode()
            if client_id:
                ids += b"x-client-request-id: %s\r\n" % client_id
        if method == b"TOO_LARGE":
            self._answer(413, _error(f"the body is over the limit of {MAX_BODY:,} bytes"), keep=False, extra=ids)
        elif path == b"/invocations":
            if method != b"POST":
                self._answer(405, _error("use POST for /invocations"), keep=keep, extra=ids)
            else:
                self._forward(body, content_type, keep, request_id, ids)
        elif path == b"/feedback":
            if method != b"POST":
                self._answer(405, _error("use POST for /feedback"), keep=keep)
            else:
                self._feedback(body, keep)
        elif path == b"/metrics" and method == b"GET":
            self._answer(
                200, generate_latest(self.router.registry), keep=keep, content_type=CONTENT_TYPE_LATEST.encode()
            )
        elif path == b"/health" and method == b"GET":
            health = {"status": "ok", "versions": self.router.routes.current(), "pid": os.getpid()}
            self._answer(200, json.dumps(health).encode(), keep=keep)
        else:
            self._answer(
                404,
                _error(f"no route {path.decode(errors='replace')}; use POST /invocations or POST /feedback"),
                keep=keep,
            )

    def _forward(self, body: bytes, content_type: bytes, keep: bool, request_id: str, ids: bytes) -> None:
        router = self.router
        try:
            version = router.routes.pick(router.picker.random())
        except (OSError, ValueError, KeyError) as exc:
            self._answer(503, _error(f"the routes cannot be read: {exc}"), keep=keep, extra=ids)
            return
        if version is None:
            self._answer(503, _error("no version takes traffic"), keep=keep, extra=ids)
            return
        started = time.perf_counter()

        def done(status: int, answer_type: bytes, content: bytes) -> None:
            router.record(version, status, time.perf_counter() - started)
            if status == 200:
                # before the answer: once a caller has its request id, feedback for it finds the prediction,
                # and a drift check that follows sees the sample
                try:
                    router.log_predictions(request_id, version, content)
                    router.maybe_sample(version, body, content)
                except OSError as exc:  # a full disk loses log lines and samples, not answers
                    print(f"router: a prediction was not logged: {exc}", file=sys.stderr)
            header = b"x-model-version: %s\r\n%s" % (version.encode(), ids)
            self._answer(status, content, keep=keep, content_type=answer_type, extra=header)

        router.pool(self.loop, version).request(body, content_type, done)

    def _feedback(self, body: bytes, keep: bool) -> None:
        """Check and store labels in a worker thread (reading the logs takes time); answer when done."""

        def answered(future: asyncio.Future[tuple[int, dict[str, Any]]]) -> None:
            if future.cancelled():  # the router is closing: nothing was stored, and nobody is left to answer
                return
            try:
                status, payload = future.result()
            except Exception as exc:  # noqa: BLE001 - the caller gets a 500 that says why; the router stays up
                status, payload = 500, {"error": f"feedback not stored: {type(exc).__name__}: {exc}"}
            self._answer(status, json.dumps(payload).encode(), keep=keep)

        self.loop.run_in_executor(self.router.executor, self.router.take_feedback, body).add_done_callback(answered)

    def _answer(self, status: int, body: bytes, *, keep: bool, content_type: bytes = _JSON, extra: bytes = b"") -> None:
        self._write(_response(status, body, content_type=content_type, extra=extra, close=not keep), close=not keep)
        if keep:
            self._next()

    def _write(self, data: bytes, *, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        if close:
            self.close()

    def close(self) -> None:
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def start_router(router: Router, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Listen for callers of ``router`` on the running loop; port 0 picks a free one."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Caller(router, loop), host, port, backlog=1024)


def serve_router(
    routes_path: Path, *, samples_path: Path, redactor: Redactor, port: int, host: str = "127.0.0.1"
) -> None:
    """Serve the router on ``host:port`` (loopback by default) until SIGTERM or SIGINT."""
    import uvloop

    async def main() -> None:
        router = Router(routes_path, samples_path=samples_path, redactor=redactor)
        server = await start_router(router, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        router.close()
        await server.wait_closed()

    uvloop.run(main())
