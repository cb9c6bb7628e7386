"""structlog to JSON lines in ``<workspace>/logs/`` and readable console lines, both redacted.

Loggers are built with ``structlog.wrap_logger`` rather than a global ``configure``, so a
notebook's own structlog setup is left alone, and every event passes the redactor
before any renderer sees it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

import structlog

from mlops_supervisor.policies import Redactor, redact_value

__all__ = ["close_logging", "make_logger"]


def _redaction_processor(redactor: Redactor) -> Any:
    def redact_event(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        redacted: dict[str, Any] = redact_value(redactor, event_dict)  # a mapping redacts to a dict
        return redacted

    return redact_event


def _logger_name(logs_dir: Path) -> str:
    return "mlops_supervisor.ws." + hashlib.sha256(str(logs_dir).encode()).hexdigest()[:12]


def make_logger(logs_dir: Path, *, redactor: Redactor, console_level: str = "WARNING") -> Any:
    """A bound structlog logger writing to ``logs_dir/mlops-supervisor.jsonl`` and stderr."""
    stdlib = logging.getLogger(_logger_name(logs_dir))
    stdlib.setLevel(logging.INFO)
    stdlib.propagate = False
    if not stdlib.handlers:
        logs_dir.mkdir(parents=True, exist_ok=True)
        shared: list[Any] = [structlog.processors.format_exc_info]
        file_handler = logging.FileHandler(logs_dir / "mlops-supervisor.jsonl", encoding="utf-8")
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer(),
                ],
                foreign_pre_chain=shared,
            )
        )
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(getattr(logging, console_level.upper(), logging.WARNING))
        console.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.dev.ConsoleRenderer(colors=False),
                ],
                foreign_pre_chain=shared,
            )
        )
        stdlib.addHandler(file_handler)
        stdlib.addHandler(console)
    return structlog.wrap_logger(
        stdlib,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redaction_processor(redactor),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def close_logging(logs_dir: Path) -> None:
    """Close and detach the handlers of the workspace's logger."""
    stdlib = logging.getLogger(_logger_name(logs_dir))
    for handler in list(stdlib.handlers):
        handler.close()
        stdlib.removeHandler(handler)
