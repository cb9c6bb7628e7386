"""Personal data in prose that Presidio's recognizers and a small NER model miss, as context patterns.

Measured on the presidio-research synthetic set (``benchmarks/bench_redaction.py``), Presidio's
defaults are weakest on street addresses, places, titles, ZIP codes and names in set phrases.
Each rule here is a regular expression with the context that makes the shape count: a title
before a capitalised name, a number before "years old", a phone-shaped number next to
"mobile:", a street suffix after a house number, the lines of a postal address block.

``prose_findings(text)`` runs the table; each rule has a cheap necessary condition so a text
that cannot match skips it. Pure functions over text (``regex`` for Unicode classes);
``policies.pii`` wraps them as one Presidio ``EntityRecognizer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import regex

__all__ = ["PROSE_ENTITIES", "PROSE_ENTITY_SET", "ProseFinding", "prose_findings"]

PROSE_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "TITLE",
    "AGE",
    "ZIP_CODE",
    "STREET_ADDRESS",
    "LOCATION",
    "ORGANIZATION",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "DATE_TIME",
)
PROSE_ENTITY_SET = frozenset(PROSE_ENTITIES)


@dataclass(frozen=True)
class ProseFinding:
    entity: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class _Text:
    """A text and what the rules' necessary conditions read from it, computed once."""

    text: str
    low: str
    digits: int


@dataclass(frozen=True)
class _Rule:
    entity: str
    pattern: regex.Pattern[str]
    may_match: Callable[[_Text], bool]
    score: float = 0.7
    check: Callable[[regex.Match[str]], bool] | None = None


# A capitalised word (Unicode), a name of one to four of them (initials allowed), and the
# same for places written in capitals (ASKER, SEINÄJOKI).
_CAP = r"\p{Lu}[\p{Ll}\p{Lu}'’-]*\p{L}"
_NAME = (
    rf"{_CAP}(?:[ \t]+(?:{_CAP}|\p{{Lu}}\.?|(?:van|von|de|da|del|der|den|ten|ter|la|le|di|du|dos|bin|al)(?=[ \t]+\p{{Lu}})))"
    + "{0,3}"
)
_PLACE = (
    rf"(?:{_CAP}|\p{{Lu}}{{2,}})(?:[ \t]+(?:{_CAP}|\p{{Lu}}{{2,}}|de|del|da|do|of|on|upon|am|an|im|nad|sur|la|le))"
    + "{0,3}"
)

_TITLES = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Lady|Lord|Rev|Hon|Capt|Col|Sgt|Lt|Mme|Mlle|Herr|Frau|Sr|Sra|Srta)"
_STREET_WORDS = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Square|Sq|Terrace|Way"
    r"|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Crescent|Close|Grove|Gardens|Hill|Park|Row|Walk|Plaza|Alley"
    r"|Loop|Path|Mews|Rise|Heights|Green|Gate|View|Vale|Wharf|Quay|Esplanade|Promenade|Expressway|Freeway|Pike"
    r"|Flat|Flats|Forges|Dam|Mall|Junction|Crossing|Point|Ridge|Meadow|Meadows|Fields|Estate|Manor|Cove)"
)
# Street names that carry their kind as a suffix (Harjukuja, Magasinsgatan, Søndergade, Brixtonlaan).
_STREET_SUFFIX = (
    r"(?:gatan|gata|vägen|väg|vej|vei|veien|veg|straße|strasse|str|weg|laan|straat|steeg|gade|stræde|katu|kuja|tie"
    r"|tee|utca|út|tér|stien|braut|brekka|gasse|plein|kade|dreef|sokak|caddesi|ulice|ulica|allee|ring|platz|torget"
    r"|torg|gränd|stig|backe|polku|raitti|rinne|vegur|stræti|stígur|tanav|tänav|iela|gatve)"
)
_STREET_LEAD = (
    r"(?:Rue|Rua|Via|Viale|Vicolo|Calle|Carrer|Avenida|Avda\.|Av\.|Avenue|Piazza|Praça|Plaza|Place|Platz|Chemin"
    r"|Boulevard|Strada|Corso|Largo|Travessa|Estrada|Camino|Paseo|Ronda|ul\.|ulica|Ulitsa|Odos|Leoforos|Allée|Impasse|Quai)"
)
_UNIT = r"(?:Suite|Ste\.?|Apt\.?|Apartment|Unit|Flat|Floor|Room|Rm\.?|P\.?[ \t]?O\.?[ \t]?Box|Box|PSC|APO|FPO|DPO|Bldg\.?|Building)"

_UNIT_WORDS = (
    "Suite", "Ste", "Apt", "Apartment", "Unit", "Flat", "Floor", "Room", "Rm", "Box", "PSC", "APO", "FPO", "DPO",
    "Bldg", "Building",
)  # fmt: skip
_PHONE_CONTEXT = (
    "phone", "mobile", "cell", "tel", "fax", "desk", "office", "call", "reach", "answering", "registered",
    "number", "contact", "whatsapp", "sms", "text me", "dial", "landline", "ring",
)  # fmt: skip
_PHONE = regex.compile(
    r"(?<![\w+.])(?:\+\d{1,3}[ \t.-]?)?(?:\(0?\d{1,4}\)[ \t.-]?)?\d{2,5}(?:[ \t.-]\d{2,5}){0,4}"
    r"(?:[ \t]?(?:x|ext\.?)[ \t]?\d{1,5})?(?![\w.]*\d)"
)


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


_DATE_LIKE = regex.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def _phone_ok(m: regex.Match[str]) -> bool:
    value = m.group(0)
    n = _digits(value)
    if not 7 <= n <= 15:
        return False
    if _DATE_LIKE.fullmatch(value):
        return False
    text = m.string
    if value.startswith("+"):
        return True
    window = text[max(0, m.start() - 40) : m.end() + 12].lower()
    return any(w in window for w in _PHONE_CONTEXT)


def _age_ok(m: regex.Match[str]) -> bool:
    return 0 < int(m.group("age")) <= 120


def _has_digit(t: _Text) -> bool:
    return t.digits > 0


def _lower_has(*words: str) -> Callable[[_Text], bool]:
    return lambda t: any(w in t.low for w in words)


def _any_of(*chars: str) -> Callable[[_Text], bool]:
    return lambda t: any(c in t.text for c in chars)


def _always(_t: _Text) -> bool:
    return True


_NOT_SPEAKERS = frozenset(
    [
        "note", "error", "warning", "warn", "info", "debug", "trace", "fatal", "date", "time", "name", "phone", "email",
        "address", "subject", "from", "to", "re", "cc", "bcc", "summary", "status", "result", "results", "answer",
        "question", "example", "step", "usage", "description", "title", "model", "run", "version", "desk", "fax",
        "mobile", "office", "website", "tel", "where", "when", "who", "what", "why", "how", "ps", "nb", "tip", "todo",
        "fixme", "hint", "source", "output", "input", "reason", "deployment", "service", "pod", "image", "tag", "tags",
        "metric", "metrics", "params", "parameters", "config", "reply", "response", "request",
    ]
)  # fmt: skip


def _given_names() -> list[str]:
    """Common given names (Faker's en and en_US lists, MIT; see the file's header)."""
    text = resources.files("mlops_supervisor.policies").joinpath("given_names.txt").read_text("utf-8")
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _not_a_surname(m: regex.Match[str]) -> bool:
    from mlops_supervisor.policies.identifiers import ML_TERMS

    given, surname = (w.lower() for w in m.group(0).split()[:: len(m.group(0).split()) - 1])
    if given in ML_TERMS:  # "Adam Optimizer", "Ray Serve": a method or tool, as NER alone may still say
        return False
    return surname not in ML_TERMS and surname not in _NOT_SPEAKERS and surname not in _NOT_NAMES


_RULES: tuple[_Rule, ...] = (
    # A common given name and a capitalised word after it: "Customer Helena Varga called", where the
    # small NER model sees no person. The name list is a trie (regex's named lists): one pass a text.
    _Rule(
        "PERSON",
        regex.compile(
            r"(?<![\p{L}\p{N}_.-])\L<given>[ \t]+\p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)?(?![\p{L}\p{N}_])",
            given=_given_names(),
        ),
        _always,
        score=0.6,
        check=_not_a_surname,
    ),
    _Rule("TITLE", regex.compile(rf"\b{_TITLES}\b\.?(?=[ \t]+\p{{Lu}})"), _any_of(*"MDPSLRHCFm")),
    _Rule("PERSON", regex.compile(rf"(?<=\b{_TITLES}\.?[ \t]+){_NAME}"), _any_of(*"MDPSLRHCFm")),
    _Rule(
        "PERSON",
        regex.compile(
            rf"(?<=\b(?i:my name is|name is|call me|named|named (?:him|her|them)|this is|speak to|talk to|ask for"
            rf"|shouted at|said to|directed by|starring|written by|produced by|signed by|attn:?|dear"
            rf"|(?:requested|owned|approved|reviewed|created|signed|reported|assigned|submitted|deployed|triggered|started|rejected|maintained|updated|edited|sent) by"
            rf"|my (?:kid|son|daughter|wife|husband|friend|brother|sister|boss|colleague|manager|partner|mother|father|mom|dad)|maybe it's under|under the name)[ \t]+)"
            rf"{_NAME}"
        ),
        _always,
        score=0.6,
    ),
    _Rule(
        "PERSON",
        regex.compile(
            r"(?<=\b(?i:my name is|call me|named)[ \t]+)\p{Ll}{3,}(?:[ \t]+\p{Ll}{3,})?(?=[ \t]*(?:[.,!?]|$))"
        ),
        _lower_has("name", "call me"),
        score=0.5,
    ),
    # Name: value fields and dialogue lines ("Name: Åsa Laine", "Destiny: Remember me")
    _Rule(
        "PERSON", regex.compile(rf"(?<=\b(?i:name|contact|from|to|by|author|owner)[ \t]*:[ \t]*){_NAME}"), _any_of(":")
    ),
    _Rule(
        "PERSON",
        regex.compile(rf"(?m)^[ \t]*({_CAP}(?:[ \t]+{_CAP})?)(?=[ \t]*:[ \t]*[\"“\p{{Lu}}])"),
        _any_of(":"),
        score=0.5,
        check=lambda m: m.group(1).lower() not in _NOT_SPEAKERS,
    ),
    _Rule(
        "PERSON",
        regex.compile(
            rf"{_NAME}(?=['’]s[ \t]+(?:daughter|son|wife|husband|mother|father|brother|sister|friend|boss|kid|child))"
        ),
        _any_of("'", "’"),
    ),
    _Rule(
        "AGE",
        regex.compile(
            r"(?i)(?:\b(?P<age>\d{1,3})[ \t-]*(?:years?|yrs?)[ \t-]*old\b|\b(?P<age>\d{1,3})[ \t]*(?:y/o|yo|y\.o\.)(?!\w)"
            r"|\b(?:aged?|turn(?:ed|s|ing)?|age:|age[ \t]+of)[ \t]+(?P<age>\d{1,3})\b(?![.:/]\d))"
        ),
        lambda t: t.digits > 0 and any(w in t.low for w in ("old", "y/o", "yo", "age", "turn", "y.o")),
        score=0.6,
        check=_age_ok,
    ),
    _Rule(
        "ZIP_CODE",
        regex.compile(
            r"(?i:\b(?:zip|postal|post|postcode)(?:[ \t]*code)?[ \t]*(?:is|:|#|no\.?)?[ \t]*)"
            r"(?P<zip>\d{3,5}(?:[ -]\d{2,4})?(?:[ \t]?\p{Lu}{2})?\b|\p{Lu}{1,2}\d[\p{Lu}\d]?[ \t]?\d\p{Lu}{2}\b|\p{Lu}\d\p{Lu}[ \t]?\d\p{Lu}\d\b)"
        ),
        _lower_has("zip", "post"),
        score=0.6,
    ),
    _Rule(
        "STREET_ADDRESS",
        regex.compile(rf"\b{_UNIT}[ \t]*#?[ \t]*\d+[A-Za-z]?\b"),
        lambda t: t.digits > 0 and any(w in t.text for w in _UNIT_WORDS),
        score=0.6,
    ),
    _Rule(
        "STREET_ADDRESS",
        regex.compile(
            rf"\b\d{{1,6}}[A-Za-z]?(?:[ \t]+\d{{1,5}})?[ \t]+(?:[\p{{L}}'.-]+[ \t]+){{0,3}}{_STREET_WORDS}\b\.?"
            rf"|\b{_STREET_LEAD}[ \t]+(?:[\p{{L}}'.-]+[ \t]+){{0,4}}\d{{1,5}}[A-Za-z]?\b"
            rf"|\b(?:\d{{1,6}}[ \t]+)?\p{{L}}[\p{{L}}-]*{_STREET_SUFFIX}\.?[ \t]+\d{{1,5}}[A-Za-z]?\b"
            rf"|\b\d{{1,6}}[ \t]+(?:\p{{Lu}}[\p{{L}}'.-]+[ \t]+){{1,3}}\d{{1,5}}\b"
            rf"|\b\d{{1,6}}[ \t]+\p{{Lu}}[\p{{L}}'.-]+[ \t]+{_STREET_WORDS}\b"
        ),
        _has_digit,
        score=0.6,
    ),
    _Rule(
        "LOCATION",
        regex.compile(
            rf"(?<=\b(?i:flew to|fly to|flying to|moved (?:here |there )?(?:from|to)|travel(?:l?ed|ling)? to|arrived (?:at|in)"
            rf"|grew up in|lives? in|living in|born in|located in|based in|relocated to|trip to|originally from|headed to"
            rf"|home city|city of|town of|village of|moving to|stay(?:ed|ing)? in|years? in|i am in|i'm in|we're in|live near)[ \t]+){_PLACE}"
        ),
        _always,
        score=0.6,
    ),
    _Rule(
        "ORGANIZATION",
        regex.compile(
            rf"(?:{_CAP}[ \t]+){{0,3}}{_CAP}[ \t]+(?:Inc|Inc\.|Ltd|Ltd\.|LLC|LLP|PLC|GmbH|AG|S\.A\.|Corp|Corp\.|Corporation|Company"
            rf"|Co\.|Group|Holdings|Technologies|Technology|Systems|Solutions|Labs|Agency|Associates|Partners|Foundation"
            rf"|Institute|Bank|Insurance|Ventures|Capital|Consulting|Research|Networks|Software|Industries|Incorporated"
            rf"|Pharmaceuticals|Enterprises|Studios|Analytics|Transit|Explorer|Unlimited|Care)\b"
            rf"|(?<=\b(?i:work(?:s|ed|ing)? (?:for|at)|employed (?:by|at)|spent a year at|following year at|later became|joined|ceo of|founder of|recorded for)[ \t]+)(?:\d+[ \t]+)?{_NAME}"
        ),
        _always,
        score=0.5,
    ),
    _Rule(
        "CREDIT_CARD",
        regex.compile(r"(?<=\b(?i:card|cc|visa|mastercard|amex|credit)\b[^\n\d]{0,25})\b\d(?:[ -]?\d){11,18}\b"),
        lambda t: t.digits >= 12 and any(w in t.low for w in ("card", "cc", "visa", "amex", "credit")),
        score=0.6,
    ),
    _Rule("PHONE_NUMBER", _PHONE, lambda t: t.digits >= 7, score=0.5, check=_phone_ok),
    _Rule("DATE_TIME", regex.compile(r"\b\d{1,2}[/.]\d{1,2}[/.](?:19|20)?\d{2}\b"), _has_digit, score=0.5),
)


# An address block: the line with the street (or a unit), the short lines after it (city,
# region, country and postcode) and the short name or company lines right before it.
_BLOCK_LINE = regex.compile(r"^[ \t>?*\-|]*(?P<body>[^\n]*?)[ \t]*$", regex.MULTILINE)
_SHORT_LINE = regex.compile(r"^[\p{L}\p{N}(][\p{L}\p{N} .,'’()&/-]{0,60}$")


def _address_blocks(text: str, streets: list[tuple[int, int]]) -> list[ProseFinding]:
    if not streets or "\n" not in text:
        return []
    lines = [(m.start("body"), m.end("body")) for m in _BLOCK_LINE.finditer(text)]
    found: list[ProseFinding] = []
    street_lines = {i for i, (s, e) in enumerate(lines) for a, b in streets if s <= a < e or (a <= s < b)}
    for i in sorted(street_lines):
        # after: up to four short lines (blank lines skipped), stopping at a line that reads as a sentence
        j, taken = i + 1, 0
        while j < len(lines) and taken < 4:
            s, e = lines[j]
            body = text[s:e]
            if not body:
                j += 1
                continue
            if not _SHORT_LINE.match(body) or _is_contact_label(body):
                break
            found.append(ProseFinding("LOCATION", s, e, 0.5))
            taken += 1
            j += 1
        # before: up to three short lines without digits (name, company, job title)
        j, taken = i - 1, 0
        while j >= 0 and taken < 3:
            s, e = lines[j]
            body = text[s:e]
            if not body:
                j -= 1
                continue
            if (
                any(c.isdigit() for c in body)
                or not _SHORT_LINE.match(body)
                or len(body.split()) > 6
                or _is_contact_label(body)
            ):
                break
            found.append(ProseFinding("PERSON", s, e, 0.4))
            taken += 1
            j -= 1
    return found


_CONTACT_LABEL = regex.compile(r"(?i)(?:mobile|desk|fax|phone|tel|e-?mail|website|office|personal info)\b")


def _is_contact_label(line: str) -> bool:
    return bool(_CONTACT_LABEL.match(line))


@lru_cache(maxsize=256)
def prose_findings(text: str, entities: frozenset[str] | None = None) -> tuple[ProseFinding, ...]:
    """What the context patterns find in ``text`` (only ``entities`` when given), by position.

    Cached: the redactor asks once to learn which names need no NER pass, Presidio's recognizer again.
    """
    found: list[ProseFinding] = []
    streets: list[tuple[int, int]] = []
    features = _Text(text, text.lower(), _digits(text))
    for rule in _RULES:
        if (
            entities is not None
            and rule.entity not in entities
            and not (rule.entity == "STREET_ADDRESS" and entities & {"LOCATION", "PERSON"})
        ):
            continue
        if not rule.may_match(features):
            continue
        for m in rule.pattern.finditer(text):
            if rule.check is not None and not rule.check(m):
                continue
            group = "age" if "age" in rule.pattern.groupindex else "zip" if "zip" in rule.pattern.groupindex else 0
            if group == 0 and rule.entity == "PERSON" and m.lastindex:
                group = 1
            start, end = m.span(group)
            if end <= start:
                continue
            if rule.entity == "STREET_ADDRESS":
                streets.append((start, end))
            found.append(ProseFinding(rule.entity, start, end, rule.score))
    found += _address_blocks(text, streets)
    if entities is not None:
        found = [f for f in found if f.entity in entities]
    return tuple(sorted(found, key=lambda f: (f.start, -f.end)))


# --- Which parts of a text are prose: only those go through the NER model --------------------

_LINE = regex.compile(r"[^\n]+")
_KV_LINE = regex.compile(r"^[ \t]*(?:-[ \t]+)?[\"']?[\w.\-/]+[\"']?[ \t]*(?::|=)(?:[ \t]|$)")
_JSON_STRING = regex.compile(r'"((?:[^"\\\n]|\\.)*)"')
_STRIP = ".,;:!?\"'()[]{}«»“”‘’*_-–—…<>#|/\\"
# Upper-case words a NER model reads better capitalised (SEINÄJOKI, ASKER), except the ones that
# are markers, not names (log levels, HTTP verbs, formats, metric and cloud abbreviations).
_CAPS_WORD = regex.compile(r"\b\p{Lu}{3,}\b")
_KEEP_CAPS = frozenset(
    [
        "INFO", "WARN", "WARNING", "ERROR", "DEBUG", "TRACE", "FATAL", "CRITICAL", "NOTICE", "GET", "POST", "PUT",
        "PATCH", "DELETE", "HEAD", "OPTIONS", "HTTP", "HTTPS", "JSON", "YAML", "CSV", "TSV", "XML", "HTML", "API",
        "URL", "URI", "SQL", "CPU", "GPU", "TPU", "RAM", "SSD", "AUC", "ROC", "RMSE", "MAE", "MSE", "MAPE", "PSI",
        "NAN", "NULL", "TRUE", "FALSE", "NONE", "UUID", "UTC", "GMT", "AWS", "GCP", "IAM", "SSO", "CLI", "SDK", "LLM",
        "NER", "PII", "SSN", "IBAN", "USA", "EU", "UN", "NATO", "FBI", "CIA", "CEO", "CTO", "CFO", "PDF", "PNG", "JPG",
        "SVG", "TLS", "SSL", "SSH", "TCP", "UDP", "DNS", "VPN", "OOM", "ETA", "FAQ", "TBD", "TODO", "FIXME", "README",
        "OK",
    ]
)  # fmt: skip


_TRIGGERS = (
    "zip", "postal", "postcode", "suite", "apt", "unit ", "box ", "age", "old", "y/o", "card", "phone", "mobile",
    "fax", "tel", "call", "name", "mr", "ms", "dr", "street", "road", "avenue",
)  # fmt: skip


def may_hold_prose_pii(text: str) -> bool:
    """A text that is no prose may still be a labelled field the context rules read ("ZIP: 8592", "Suite 727")."""
    low = text.lower()
    return any(k in low for k in _TRIGGERS)


def reads_as_prose(text: str) -> bool:
    """At least two words of letters, and words are at least two in five of the whitespace-separated tokens."""
    tokens = text.split()
    if len(tokens) < 2:
        return False
    words = 0
    for token in tokens:
        core = token.strip(_STRIP)
        if len(core) >= 2 and core.replace("'", "").replace("’", "").replace("-", "").isalpha():
            words += 1
    return words >= 2 and words * 5 >= len(tokens) * 2


# Words that start sentences or mark log and API text: no name begins with them, so a segment whose
# only capitalised words are these needs no NER pass.
_NOT_NAMES = frozenset(
    [
        "the", "a", "an", "i", "i'm", "i've", "i'd", "i'll", "it", "it's", "its", "this", "that", "these", "those",
        "my", "our", "we", "you", "your", "he", "she", "they", "his", "her", "their", "there", "here", "what", "when",
        "where", "who", "why", "how", "which", "is", "are", "was", "were", "be", "been", "do", "does", "did", "can",
        "could", "will", "would", "should", "may", "might", "must", "shall", "please", "hello", "hi", "hey", "dear",
        "yes", "no", "not", "if", "in", "on", "at", "for", "to", "from", "of", "and", "but", "or", "so", "as", "by",
        "with", "after", "before", "then", "also", "just", "all", "any", "some", "each", "every", "one", "two", "three",
        "first", "last", "next", "new", "our", "thanks", "thank", "ok", "true", "false", "none", "null", "yes",
        "running", "pending", "succeeded", "failed", "failure", "available", "ready", "deployment", "deployments",
        "service", "pod", "pods", "container", "image", "model", "models", "run", "runs", "step", "error", "warning",
        "info", "debug", "note", "bearer", "basic", "token", "authorization", "content", "accept", "host", "user",
        "agent", "get", "post", "put", "patch", "delete", "head", "options", "http", "https", "json", "minimum",
        "maximum", "total", "average", "mean", "status", "reason", "message", "type", "kind", "name", "version",
        "value", "key", "baseline", "champion", "challenger", "canary", "staging", "production", "candidate", "drift",
        "retrain", "refit", "rollback", "promote", "promoted", "deploy", "deployed", "registered", "approval",
        "approved", "gate", "threshold", "thresholds", "evaluation", "metric", "gradient", "boosting", "random",
        "forest", "logistic", "regression", "linear", "neural", "network", "decision", "classifier", "regressor",
        "trained", "training", "dataset", "data", "feature", "features", "label", "labels", "target", "endpoint",
        "endpoints", "request", "response", "secret", "secrets", "keyword", "private", "public", "string", "entropy",
        "high", "low", "detector", "plugin", "password", "credentials",
    ]
)  # fmt: skip
_ALPHA_WORDS = regex.compile(r"\b\p{L}{2,}\b")
_CAPITALISED = regex.compile(r"\b(?:\p{Lu}[\p{Ll}'’]+|\p{Lu}{3,})\b")


def has_name_candidate(text: str, offset: int = 0, covered: Sequence[tuple[int, int]] = ()) -> bool:
    """A capitalised word that is not a sentence opener, a log, HTTP or MLOps word, a method name (Jensen,
    Adam), or inside a ``covered`` span (a name a context rule already found; offsets from ``offset``)."""
    from mlops_supervisor.policies.identifiers import ML_TERMS

    for m in _CAPITALISED.finditer(text):
        word = m.group(0)
        low = word.lower()
        if low in _NOT_NAMES or low in ML_TERMS or (word.isupper() and word in _KEEP_CAPS):
            continue
        at = offset + m.start()
        if any(s <= at < e for s, e in covered):
            continue
        return True
    return False


def prose_segments(text: str) -> list[tuple[int, int]]:
    """The spans of ``text`` that read as prose: all of it, or in structured text (JSON, YAML, env and
    INI lines) the values that read as prose."""
    stripped = text.lstrip()
    if stripped[:1] in "{[" and '"' in text:
        return [m.span(1) for m in _JSON_STRING.finditer(text) if reads_as_prose(m.group(1))]
    if "\n" in text:
        lines = [m for m in _LINE.finditer(text) if m.group(0).strip()]
        kv = [m for m in lines if _KV_LINE.match(m.group(0))]
        if len(kv) >= 2 and len(kv) * 5 >= len(lines) * 3:
            segments = []
            for m in lines:
                head = _KV_LINE.match(m.group(0))
                start = m.start() + (head.end() if head else 0)
                if reads_as_prose(text[start : m.end()]):
                    segments.append((start, m.end()))
            return segments
    return [(0, len(text))] if reads_as_prose(text) else []


def ner_segments(
    text: str, prose: list[tuple[int, int]], covered: Sequence[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """The parts of the ``prose`` segments of ``text`` worth a NER pass: those with a capitalised word a
    name could start with that no ``covered`` span (what the context rules found) explains, or all of a
    text written in lower case; in a multi-line segment (a log, an address block) the runs of such lines."""
    out: list[tuple[int, int]] = []
    lower_case = not any(c.isupper() for c in text)
    for start, end in prose:
        segment = text[start:end]
        if lower_case:
            if len(_ALPHA_WORDS.findall(segment)) >= 6:
                out.append((start, end))  # written in lower case: no capital to go by
        elif "\n" not in segment:
            if has_name_candidate(segment, start, covered):
                out.append((start, end))
        else:
            for m in _LINE.finditer(segment):
                if not has_name_candidate(m.group(0), start + m.start(), covered):
                    continue
                s, e = start + m.start(), start + m.end()
                if out and text[out[-1][1] : s] == "\n":
                    out[-1] = (out[-1][0], e)
                else:
                    out.append((s, e))
    return out


def for_ner(text: str) -> str:
    """``text`` with upper-case names capitalised (same length, same offsets) unless upper case is its style."""
    caps = [m for m in _CAPS_WORD.finditer(text) if m.group(0) not in _KEEP_CAPS]
    if not caps or len(caps) * 2 > len(text.split()):
        return text
    out = list(text)
    for m in caps:
        word = m.group(0).capitalize()
        if len(word) == len(m.group(0)):
            out[m.start() : m.end()] = word
    return "".join(out)
