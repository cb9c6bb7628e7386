"""One redactor interface for every tool input and output, log event and LLM-bound message.

``Redactor`` is the protocol; ``mlops_supervisor.policies.pii.PresidioRedactor`` is the redactor
every boundary uses (Presidio, our secret rules and the MLOps allow-list). ``redact_value`` walks
a payload value by value; a value under a key that names a secret (``DB_PASSWORD``,
``client_secret``, ``apiKey``) is replaced whole, whatever the redactor finds in it.

``PatternRedactor`` is the older regular-expression stand-in, kept for callers that want no
model at all: e-mail addresses, payment card numbers (Luhn-checked, so order ids and timestamps
survive) and the common API-key and token shapes. Matches become ``<ENTITY>`` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from mlops_supervisor.policies.secrets import secret_key_strength, secret_value_for_key

__all__ = [
    "Finding",
    "PatternRedactor",
    "Redactor",
    "collect_strings",
    "redact_value",
    "replace_spans",
]


@dataclass(frozen=True)
class Finding:
    """One detected entity: its type, where it sits in the text and how sure the detector is."""

    entity: str
    start: int
    end: int
    score: float = 1.0


@runtime_checkable
class Redactor(Protocol):
    """What every redaction backend provides."""

    def redact_text(self, text: str) -> str:
        """``text`` with every detected entity replaced by its placeholder."""
        ...

    def findings(self, text: str) -> list[Finding]:
        """The entities detected in ``text``, in order."""
        ...


def redact_value(redactor: Redactor, value: Any) -> Any:
    """Redact every string inside ``value`` (mappings, sequences, scalars), keys included.

    A value under a key that names a secret (``DB_PASSWORD``, ``client_secret``, ``api_key``; see
    ``secrets.secret_key_strength``) becomes ``<SECRET>`` whole, and so does the ``value`` of a
    ``{"key": "db_password", "value": ...}`` record (MLflow params and tags). A redactor with a
    ``prime(texts)`` method is handed all the strings first, so it can analyse them as one batch.
    """
    prime = getattr(redactor, "prime", None)
    if callable(prime) and not isinstance(value, str):
        strings: list[str] = []
        collect_strings(value, strings)
        if len(strings) > 1:
            prime(strings)
    return _redact(redactor, value, None)


def collect_strings(value: Any, into: list[str]) -> None:
    """Append every string in ``value`` to ``into``, mapping keys included (each key before its value), in order."""
    if isinstance(value, str):
        into.append(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if isinstance(k, str):
                into.append(k)
            collect_strings(v, into)
    elif isinstance(value, list | tuple):
        for v in value:
            collect_strings(v, into)


_SECRET_PLACEHOLDER = "<SECRET>"


def _redact(redactor: Redactor, value: Any, key: str | None) -> Any:
    if key is not None and _is_secret_field(key, value):
        return _SECRET_PLACEHOLDER
    if isinstance(value, str):
        return redactor.redact_text(value)
    if isinstance(value, Mapping):
        # {"key": "db_password", "value": ...} (MLflow params, tags) and {"name": "DB_PASSWORD", "value": ...}
        # (Kubernetes env): the value's key is a field of the record
        record_key = value.get("key", value.get("name"))
        if isinstance(record_key, str) and "value" in value and _is_secret_field(record_key, value["value"]):
            value = {**value, "value": _SECRET_PLACEHOLDER}
        return {
            (redactor.redact_text(k) if isinstance(k, str) else k): _redact(
                redactor, v, k if isinstance(k, str) else None
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact(redactor, v, key) for v in value)
    return value


def _is_secret_field(key: str, value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == _SECRET_PLACEHOLDER:
        return False
    return secret_key_strength(key) is not None and secret_value_for_key(key, str(value))


def replace_spans(text: str, findings: Iterable[Finding]) -> str:
    """``text`` with each finding's span replaced by ``<ENTITY>`` (findings in order; overlaps skipped)."""
    parts: list[str] = []
    cursor = 0
    for f in findings:
        if f.start < cursor:
            continue
        parts += [text[cursor : f.start], f"<{f.entity}>"]
        cursor = f.end
    if not parts:
        return text
    parts.append(text[cursor:])
    return "".join(parts)


# Each alternative is a named group; the group name is the entity placed in the text.
_PATTERNS: dict[str, str] = {
    "PRIVATE_KEY": r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
    "JWT": r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    "API_KEY": (
        r"\b(?:sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{20,}"
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
        r"|gh[pousr]_[A-Za-z0-9]{36,}"
        r"|github_pat_[A-Za-z0-9_]{40,}"
        r"|xox[abposr]-[A-Za-z0-9-]{10,}"
        r"|AIza[0-9A-Za-z_-]{35}"
        r"|glpat-[A-Za-z0-9_-]{20}"
        r"|hf_[A-Za-z0-9]{30,}"
        r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,})"
    ),
    "SECRET_ASSIGNMENT": (
        r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)"
        r"\b[\"']?\s*[:=]\s*[\"']?(?P<secret_value>[^\s\"',;]{6,})"
    ),
    "EMAIL_ADDRESS": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    # not inside a decimal number: 0.9530706587432183 is a float, not a card
    "CREDIT_CARD": r"(?<![\d.])(?<!\d\.)\d(?:[ -]?\d){12,18}(?!\d|\.\d)",
}


@lru_cache(maxsize=len(_PATTERNS) ** 2)
def _combined(entities: tuple[str, ...]) -> re.Pattern[str]:
    """One case-insensitive alternation of ``entities``' patterns, in ``_PATTERNS`` order."""
    return re.compile(
        "|".join(f"(?P<{name}>{_PATTERNS[name].replace('(?i)', '')})" for name in entities), re.IGNORECASE
    )


_COMBINED = _combined(tuple(_PATTERNS))
# What each pattern cannot match without, checked on the lower-cased text (ASCII texts only).
# An alternative that matches nowhere in a text never wins at any position, so leaving it out
# of the alternation gives exactly the same matches; most texts (JSON of numbers, log lines)
# then skip most patterns.
_API_KEY_PREFIXES = (
    *("sk-", "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    *("xox", "aiza", "glpat-", "hf_", "_live_", "_test_"),
)
# a card is at least 13 characters of digits, spaces and dashes in a row (a translate and a
# substring test: a tenth of what a regex search of the text costs)
_CARD_RUN = bytes.maketrans(b"0123456789 -", b"#" * 12)
_MAY_MATCH: dict[str, Callable[[str, str], bool]] = {
    "PRIVATE_KEY": lambda _, low: "private key-----" in low,
    "JWT": lambda _, low: low.count("eyj") >= 2,
    "API_KEY": lambda _, low: any(prefix in low for prefix in _API_KEY_PREFIXES),
    "SECRET_ASSIGNMENT": lambda _, low: (
        (":" in low or "=" in low) and any(word in low for word in ("key", "secret", "token", "passw", "pwd"))
    ),
    "EMAIL_ADDRESS": lambda text, _: "@" in text,
    "CREDIT_CARD": lambda text, _: b"#" * 13 in text.encode("ascii").translate(_CARD_RUN),
}
# Case-insensitivity is only wanted for the assignment keywords; the other shapes are
# checked again case-sensitively so that, say, 'akia...' is not taken for an AWS key.
_CASE_SENSITIVE = {
    name: re.compile(p) for name, p in _PATTERNS.items() if name not in {"SECRET_ASSIGNMENT", "EMAIL_ADDRESS"}
}


# No entity above is shorter than this, so shorter strings (keys, ids, numbers) skip the scan.
_SHORTEST = 6


def _luhn_ok(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _pattern_for(text: str) -> re.Pattern[str] | None:
    """The alternation of the patterns that may match ``text``; None when none may."""
    if not text.isascii():  # re's case folding takes 'ſ' for 's' and 'K' for 'k'; str.lower() does not
        return _COMBINED
    low = text.lower()
    entities = tuple(name for name, may_match in _MAY_MATCH.items() if may_match(text, low))
    return _combined(entities) if entities else None


def _spans(matches: Iterable[re.Match[str]]) -> list[tuple[str, int, int]]:
    """Entity, start and end of each match that survives the case and Luhn checks."""
    spans: list[tuple[str, int, int]] = []
    for match in matches:
        entity = match.lastgroup
        if entity is None or entity == "secret_value":
            continue
        if entity == "SECRET_ASSIGNMENT":
            # keep the key name readable, hide only the value
            spans.append(("SECRET", match.start("secret_value"), match.end("secret_value")))
            continue
        value = match.group(entity)
        if entity in _CASE_SENSITIVE and not _CASE_SENSITIVE[entity].fullmatch(value):
            continue
        if entity == "CREDIT_CARD" and not _luhn_ok(value):
            continue
        spans.append((entity, match.start(), match.end()))
    return spans


class PatternRedactor:
    """Regular-expression redaction of e-mails, card numbers and key or token shapes."""

    def _scan(self, text: str) -> list[tuple[str, int, int]]:
        pattern = _pattern_for(text)
        return _spans(pattern.finditer(text)) if pattern is not None else []

    def findings(self, text: str) -> list[Finding]:
        """The entities detected in ``text``, in order."""
        return [Finding(e, s, t) for e, s, t in self._scan(text)]

    def redact_text(self, text: str) -> str:
        """``text`` with every detected entity replaced by ``<ENTITY>``."""
        if len(text) < _SHORTEST:
            return text
        spans = self._scan(text)
        if not spans:
            return text
        parts: list[str] = []
        cursor = 0
        for entity, start, end in spans:
            parts.append(text[cursor:start])
            parts.append(f"<{entity}>")
            cursor = end
        parts.append(text[cursor:])
        return "".join(parts)
