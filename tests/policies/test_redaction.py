"""The stand-in pattern redactor catches e-mails, card numbers and key shapes, and spares look-alikes."""

from __future__ import annotations

import pytest

from mlops_supervisor.policies import PatternRedactor, redact_value

R = PatternRedactor()


@pytest.mark.parametrize(
    ("text", "entity"),
    [
        ("contact jane.doe+ml@example.co.uk now", "EMAIL_ADDRESS"),
        ("card 4111 1111 1111 1111 on file", "CREDIT_CARD"),
        ("card 5500-0000-0000-0004", "CREDIT_CARD"),
        ("OPENAI_API_KEY=sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123", "API_KEY"),
        ("aws AKIAIOSFODNN7EXAMPLE key", "API_KEY"),
        ("token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "API_KEY"),
        ('password: "hunter2hunter2"', "SECRET"),
    ],
)
def test_detects(text: str, entity: str) -> None:
    """Each shape is replaced by its placeholder."""
    out = R.redact_text(text)
    assert f"<{entity}>" in out


@pytest.mark.parametrize("text", ["order 1234567890123 shipped", "run 2026-11-29 12:00", "version 4111 of model"])
def test_spares_look_alikes(text: str) -> None:
    """Numbers that fail the Luhn check and plain text are left alone."""
    assert R.redact_text(text) == text


def test_redact_value_walks_structures() -> None:
    """Nested dicts and lists are redacted, keys included."""
    value = {"to": ["a@b.io"], "a@b.io": 1, "n": 3}
    assert redact_value(R, value) == {"to": ["<EMAIL_ADDRESS>"], "<EMAIL_ADDRESS>": 1, "n": 3}
