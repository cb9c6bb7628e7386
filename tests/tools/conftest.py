"""Fixtures shared by the tools' tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Metrics(BaseHTTPRequestHandler):
    """A router's /metrics as a test sets it (``server.text``)."""

    def do_GET(self) -> None:
        body = self.server.text.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def router() -> Iterator[ThreadingHTTPServer]:
    """A /metrics endpoint on loopback whose text the test sets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    server.text = ""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
