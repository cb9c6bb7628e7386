"""One redactor interface for every tool input and output, log event and LLM-bound message.

``PatternRedactor`` is the stand-in until the Presidio-based layer lands: e-mail
addresses, payment card numbers (Luhn-checked, so order ids and timestamps survive)
and the common API-key and token shapes. Matches become ``<ENTITY>`` placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Finding", "PatternRedactor", "Redactor", "redact_value"]


@dataclass(frozen=True)
class Finding:
    """One detected entity: its type and where it sits in the text."""

    entity: str
    start: int
    end: int


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
    """Redact every string inside ``value`` (mappings, sequences, scalars), keys included."""
    if isinstance(value, str):
        return redactor.redact_text(value)
    if isinstance(value, Mapping):
        return {
            (redactor.redact_text(k) if isinstance(k, str) else k): redact_value(redactor, v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(redactor, v) for v in value)
    return value


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

_COMBINED = re.compile(
    "|".join(f"(?P<{name}>{pattern.replace('(?i)', '')})" for name, pattern in _PATTERNS.items()), re.IGNORECASE
)
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


class PatternRedactor:
    """Regular-expression redaction of e-mails, card numbers and key or token shapes."""

    def _scan(self, text: str) -> list[tuple[str, int, int]]:
        spans: list[tuple[str, int, int]] = []
        for match in _COMBINED.finditer(text):
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
