"""Secret detection: credentials that Presidio has no recognizer for, as a table of rules.

Each ``SecretRule`` is a regular expression over one credential shape (cloud keys, vendor
tokens, JWTs, private-key blocks, bearer headers, passwords in URLs, assignments whose key
names a secret), the lower-case keywords it cannot match without (a cheap necessary
condition, so most texts run no rule at all) and, where the shape alone is weak, a check of
the value: its Shannon entropy, a context word before it, or the strength of the key name.
Shapes follow gitleaks' rules (``tests/fixtures/gitleaks-rules``) where they exist.

``find_secrets(text)`` runs the table; it needs the standard library only, so a caller that
asks only "does this hold a secret?" (the policy that denies a tool call whose arguments do)
never loads Presidio or spaCy. ``mlops_supervisor.policies.pii.PresidioRedactor`` registers
the same table with Presidio's ``AnalyzerEngine`` as one ``EntityRecognizer``.

Entities: ``API_KEY`` (vendor tokens and key ids), ``SECRET`` (passwords, secret keys,
signatures, header credentials), ``JWT`` and ``PRIVATE_KEY``. A finding covers the secret
value only: ``DB_PASSWORD=<SECRET>``, ``postgres://app:<SECRET>@db/prod``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from mlops_supervisor.policies.identifiers import is_benign_identifier

__all__ = [
    "SECRET_ENTITIES",
    "SECRET_RULES",
    "SecretMatch",
    "SecretRule",
    "find_secrets",
    "has_secret",
    "secret_key_strength",
    "secret_value_for_key",
    "shannon_entropy",
]

SECRET_ENTITIES: frozenset[str] = frozenset({"API_KEY", "SECRET", "JWT", "PRIVATE_KEY"})
"""Entities that are credentials, as opposed to personal data."""


@dataclass(frozen=True)
class SecretMatch:
    """One secret found: its entity, where its value sits, the rule that found it and how sure it is."""

    entity: str
    start: int
    end: int
    rule: str
    score: float = 1.0


@dataclass(frozen=True)
class SecretRule:
    """A credential shape: the pattern (its ``secret`` group, or the whole match, is the value)."""

    name: str
    entity: str
    pattern: re.Pattern[str]
    keywords: tuple[str, ...]
    """Lower-case substrings the pattern cannot match without; empty means always run."""
    check: Callable[[str, re.Match[str]], bool] | None = None
    score: float = 1.0


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _classes(value: str) -> int:
    return sum(
        (any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value)),
    )


def _value(match: re.Match[str]) -> str:
    return match.group("secret") if "secret" in match.re.groupindex else match.group(0)


def _mixed(min_classes: int = 3) -> Callable[[str, re.Match[str]], bool]:
    """The value mixes lower case, upper case and digits (random tokens do; words and names do not)."""
    return lambda _text, m: _classes(_value(m)) >= min_classes


def _entropy(bits: float) -> Callable[[str, re.Match[str]], bool]:
    return lambda _text, m: shannon_entropy(_value(m)) >= bits


def _context(words: tuple[str, ...], window: int = 80) -> Callable[[str, re.Match[str]], bool]:
    """One of ``words`` (lower case) occurs within ``window`` characters before the match, and the value
    is random-looking: lower case, upper case and digits, 3.5 bits of entropy a character or more."""

    def check(text: str, m: re.Match[str]) -> bool:
        before = text[max(0, m.start() - window) : m.start()].lower()
        value = _value(m)
        return any(w in before for w in words) and _classes(value) == 3 and shannon_entropy(value) >= 3.5

    return check


def _openai_key(_text: str, m: re.Match[str]) -> bool:
    tail = m.group("secret")
    return bool(m.group("kind")) or "T3BlbkFJ" in tail or _classes(tail) == 3


# The END line may be missing (a truncated paste): then the base64 body lines that follow go too,
# written with real or JSON-escaped newlines.
_KEY_BODY = r"(?:[ \t]*(?:\r?\n|\\r\\n|\\n)?[ \t]*(?:[A-Za-z0-9+/=]{8,}|[A-Za-z-]+:[^\n\\]*))*"
_BEGIN = r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
_END = r"-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"

_TOKEN_END = r"(?![A-Za-z0-9_-])"

# Rules earlier in the table win where two findings overlap (a vendor's token shape names the
# entity better than the assignment it sits in).
SECRET_RULES: tuple[SecretRule, ...] = (
    SecretRule(
        "private-key",
        "PRIVATE_KEY",
        re.compile(rf"{_BEGIN}(?:(?:(?!-----BEGIN)[\s\S]){{0,20000}}?{_END}|{_KEY_BODY})", re.IGNORECASE),
        ("private key",),
    ),
    SecretRule(
        "jwt",
        "JWT",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
        ("eyj",),
    ),
    SecretRule(
        "aws-access-key-id",
        "API_KEY",
        re.compile(r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
        ("akia", "asia", "abia", "acca", "a3t"),
    ),
    SecretRule(
        "github-token",
        "API_KEY",
        re.compile(rf"\b(?:gh[pousr]_[A-Za-z0-9]{{16,255}}|github_pat_[A-Za-z0-9_]{{20,255}}){_TOKEN_END}"),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    SecretRule(
        "github-legacy-token",
        "API_KEY",
        re.compile(
            r"(?i:\b(?:github|gh)[\w .-]{0,30}?(?:token|pat|oauth|key|secret|auth)[\w \t.:=\"'-]{0,12}?)(?<![/\w])(?P<secret>[0-9a-f]{40})\b"
        ),
        ("github", "gh_", "gh-"),
    ),
    SecretRule(
        "gitlab-token",
        "API_KEY",
        # the whole token, however long: newer tokens carry a routing suffix after a dot
        re.compile(
            r"\b(?:gl(?:pat|dt|ptt|rt|soat|ft|cbt|imt|agent|oas)-|GR1348941)[A-Za-z0-9_-]{10,}(?:\.[A-Za-z0-9_-]+)*"
        ),
        (
            "glpat-",
            "gldt-",
            "glptt-",
            "glrt-",
            "glsoat-",
            "glft-",
            "glcbt-",
            "glimt-",
            "glagent-",
            "gloas-",
            "gr1348941",
        ),
    ),
    SecretRule(
        "slack-webhook",
        "SECRET",
        re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9+/_-]{16,})"),
        ("hooks.slack.com",),
    ),
    SecretRule(
        "slack-token",
        "API_KEY",
        re.compile(r"\b(?:xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}|xoxe\.xox[bp]-[A-Za-z0-9-]{10,})"),
        ("xox", "xapp-"),
    ),
    SecretRule(
        "anthropic-key",
        "API_KEY",
        re.compile(rf"\bsk-ant-[A-Za-z0-9_-]{{20,}}{_TOKEN_END}"),
        ("sk-ant-",),
    ),
    SecretRule(
        "openai-key",
        "API_KEY",
        re.compile(rf"\bsk-(?P<kind>proj-|svcacct-|admin-)?(?P<secret>[A-Za-z0-9_-]{{20,}}){_TOKEN_END}"),
        ("sk-",),
        check=_openai_key,
    ),
    SecretRule(
        "huggingface-token",
        "API_KEY",
        re.compile(r"\b(?:hf|api_org)_[A-Za-z0-9]{20,}\b"),
        ("hf_", "api_org_"),
        check=_mixed(2),
    ),
    SecretRule(
        "stripe-key",
        "API_KEY",
        re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}\b|\bwhsec_[A-Za-z0-9]{24,}\b"),
        ("_live_", "_test_", "whsec_"),
    ),
    SecretRule("google-api-key", "API_KEY", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), ("aiza",)),
    SecretRule("databricks-token", "API_KEY", re.compile(r"\bdapi[a-f0-9]{32}(?:-\d)?\b"), ("dapi",)),
    SecretRule(
        "azure-storage-key",
        "SECRET",
        re.compile(
            r"(?i:\b(?:AccountKey|SharedAccessKey|SharedSecret|(?<=[?&;\s])sig)=)(?P<secret>[A-Za-z0-9+/%]{16,}(?:={1,2}|(?:%3D){1,2})?)"
        ),
        ("accountkey=", "sharedaccesskey=", "sharedsecret=", "sig="),
    ),
    SecretRule(
        "azure-ad-client-secret",
        "SECRET",
        re.compile(r"(?<![A-Za-z0-9_~.])[a-zA-Z0-9_~.]{3}\dQ~[a-zA-Z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])"),
        ("q~",),
    ),
    SecretRule(
        "authorization-header",
        "SECRET",
        re.compile(
            r"(?i:\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?(?:(?:bearer|basic|token|digest|bot|apikey|api-key|sso-key|negotiate)[ \t]+)?)"
            r"(?P<secret>[A-Za-z0-9._~+/=:-]{8,})"
        ),
        ("authorization",),
        check=lambda _t, m: m.group("secret").lower() not in {"bearer", "basic", "token", "required", "header"},
    ),
    SecretRule(
        "bearer-token",
        "SECRET",
        re.compile(r"(?i:\bbearer[ \t]+)(?P<secret>[A-Za-z0-9._~+/-]{12,}=*)"),
        ("bearer",),
        check=_entropy(3.0),
    ),
    SecretRule(
        "api-key-header",
        "SECRET",
        re.compile(
            r"(?i:\bx-(?:[a-z0-9]+-)*(?:api-?key|auth-?token|access-?token|token|secret|key)[\"']?[ \t]*:[ \t]*[\"']?)"
            r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})"
        ),
        ("x-",),
    ),
    SecretRule(
        "url-password",
        "SECRET",
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s:/?#@'\"<>]*:(?P<secret>[^\s/?#@'\"<>]+)@(?=[\w.\[-])"),
        ("://",),
        check=lambda _t, m: not _placeholder(m.group("secret")),
    ),
    SecretRule(
        "url-token",
        "SECRET",
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://(?P<secret>[A-Za-z0-9_-]{20,})@(?=[\w.-])"),
        ("://",),
        check=lambda _t, m: shannon_entropy(m.group("secret")) >= 3.5 and _classes(m.group("secret")) >= 2,
    ),
    SecretRule(
        "aws-secret-access-key",
        "SECRET",
        re.compile(r"(?<![A-Za-z0-9+/])(?P<secret>[A-Za-z0-9+/]{40})(?![A-Za-z0-9+/=])"),
        ("aws", "amazon"),
        check=_context(("aws", "amazon", "secret"), window=120),
    ),
    SecretRule(
        "password-in-prose",
        "SECRET",
        re.compile(
            r"(?i:\b(?:password|passwd|passcode|pwd)[ \t]+(?:is|was|=|:)[ \t]+[\"']?)(?P<secret>[^\s\"',;]{4,})"
        ),
        ("pass", "pwd"),
        check=lambda _t, m: _classes(m.group("secret")) >= 2 or not m.group("secret").isalpha(),
        score=0.8,
    ),
)

# Keys whose value is a secret: DB_PASSWORD=, client_secret:, "api_key": "...", apiKey=, --password=.
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z0-9_.-]*?(?i:pass|pwd|secret|token|key|credential|auth|signature|dsn|conn)[A-Za-z0-9_.-]*)"
    r"[\"']?[ \t]*(?P<sep>:=|=>|=|:(?![/\\]))[ \t]*(?:!!\w+[ \t]+)?"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s\"',;}\]#&]+)?"
)
_ASSIGNMENT_KEYWORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth", "signature", "dsn", "conn")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_STRONG_PARTS = frozenset(
    {
        "password",
        "passwords",
        "passwd",
        "pwd",
        "passphrase",
        "passcode",
        "secret",
        "secrets",
        "credential",
        "credentials",
    }
)
_STRONG_NAMES = frozenset(
    {
        "pass",
        "token",
        "auth",
        "authorization",
        "api_key",
        "apikey",
        "access_key",
        "secret_key",
        "private_key",
        "private_key_id",
        "account_key",
        "access_token",
        "auth_token",
        "refresh_token",
        "id_token",
        "session_token",
        "sas_token",
        "bearer_token",
        "signing_key",
        "encryption_key",
        "master_key",
        "client_key",
        "connection_string",
        "conn_str",
        "connstr",
        "dsn",
        "webhook_url",
    }
)
# The last part of the key name says what the value is: a secret, or something about one
# (secretName: a Kubernetes object, token_uri: a URL, max_tokens: a number).
_NOT_SECRET_TAILS = frozenset(
    {
        "name", "names", "ref", "refs", "path", "file", "dir", "id", "ids", "type", "uri", "url", "length", "len",
        "count", "size", "ttl", "expiry", "expires", "at", "policy", "hash", "hashes", "field", "env", "var",
        "header", "mode", "format", "prefix", "suffix", "pattern", "regex", "provider", "source", "store",
        "version", "rotation", "enabled", "required", "min", "max", "reset", "hint", "strength", "tokens", "keys",
        "secrets", "limit", "budget", "column", "col", "index", "idx", "metric", "label",
    }
)  # fmt: skip
_SPECIAL_TOKENS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask", "start", "end", "stop", "special"})
_SECRET_TAILS = frozenset({"key", "token", "pass", "auth", "signature", "sig"})


def secret_key_strength(name: str) -> Literal["strong", "weak"] | None:
    """Whether a key ``name`` says its value is a secret: always ("strong"), if it looks random ("weak"), or not.

    ``DB_PASSWORD``, ``client_secret``, ``MLFLOW_TRACKING_PASSWORD``, ``apiKey`` and ``private_key`` are
    strong; ``CACHE_KEY`` and ``GH_TOKEN`` are weak (their value counts when it looks random: ``sort_key:
    created_at`` is not a secret); ``secretName``, ``token_uri``, ``max_tokens`` and ``pad_token`` are not secrets.
    """
    norm = _CAMEL.sub("_", name.strip("\"'-")).lower().replace("-", "_").replace(".", "_").strip("_")
    parts = [p for p in norm.split("_") if p]
    if not parts:
        return None
    if norm in _STRONG_NAMES or "_".join(parts[-2:]) in _STRONG_NAMES:
        return "strong"
    last = parts[-1]
    if (
        last in _NOT_SECRET_TAILS
        or "public" in parts
        or (last == "token" and len(parts) > 1 and parts[-2] in _SPECIAL_TOKENS)
    ):
        return None
    if last in _STRONG_PARTS or last.endswith(("password", "passwd", "secret")) or last in {"pwd", "passphrase"}:
        return "strong"
    if any(p in _STRONG_PARTS for p in parts):
        return "strong"  # aws_secret_access_key, secrets_for_the_build
    if last in _SECRET_TAILS or last.endswith(("token", "apikey")):
        return "weak"
    return None


_PLACEHOLDER = re.compile(
    r"(?:<[A-Z_]+>|\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|\$\(.*\)|%\(.*\)s|\*+|x{3,}|\.{3}|…|null|none|nil|true|false|~|redacted|changeme_in_env|env:.*|secret:.*|vault:.*)",
    re.IGNORECASE,
)


def _placeholder(value: str) -> bool:
    """An empty, templated, masked or already-redacted value: nothing to hide."""
    return not value or bool(_PLACEHOLDER.fullmatch(value))


_LETTERS_ONLY = re.compile(r"[A-Za-z]+(?:[._:/-][A-Za-z]+)*")


def _looks_random(value: str) -> bool:
    """A value a weak key (``*_KEY``, ``*_TOKEN``) holds that is a credential rather than a name or a word."""
    if len(value) < 8 or " " in value or is_benign_identifier(value) or _reads_as_words(value):
        return False
    if _LETTERS_ONLY.fullmatch(value):
        return False  # mlflow.parentRunId, created_at: names without a digit
    return _classes(value) >= 2 or shannon_entropy(value) >= 3.5


def secret_value_for_key(key: str, value: str) -> bool:
    """Whether ``value``, held under ``key``, is a secret to hide: any real value of a strong key, a random one of a weak key."""
    strength = secret_key_strength(key)
    if strength is None or _placeholder(value) or value.lower() in _AUTH_SCHEMES:
        return False
    return strength == "strong" or _looks_random(value)


def _assignments(text: str) -> list[SecretMatch]:
    found: list[SecretMatch] = []
    for m in _ASSIGNMENT.finditer(text):
        strength = secret_key_strength(m.group("key"))
        if strength is None:
            continue
        raw = m.group("value")
        if raw is None:
            if strength == "strong":
                found += _block_values(text, m)
            continue
        start, end = m.span("value")
        if raw[:1] in "\"'" and raw[-1:] == raw[:1] and len(raw) >= 2:
            start, end = start + 1, end - 1
        value = text[start:end]
        if _placeholder(value) or value in "{[|>" or value.lower() in _AUTH_SCHEMES:
            continue  # 'Authorization: Bearer <token>': the header rule takes the token
        if strength == "weak" and not _looks_random(value):
            continue
        found.append(SecretMatch("SECRET", start, end, "secret-assignment", 0.9 if strength == "strong" else 0.7))
    return found


_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "bot", "apikey", "negotiate"})
_LINE_VALUE = re.compile(r"[ \t]*(?:-[ \t]+)?(?:[\w.\"'-]+[ \t]*[:=][ \t]*)?(?P<value>[^\s#;]+)")
_NESTED_KEY = re.compile(r"[ \t]*(?:-[ \t]+)?[\w.\"'-]+[ \t]*:[ \t]*$")


def _block_values(text: str, m: re.Match[str]) -> list[SecretMatch]:
    """The values of the lines indented under a secret key whose own value is empty (YAML maps, INI continuations)."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    indent = len(text[line_start:]) - len(text[line_start:].lstrip(" \t"))
    eol = text.find("\n", m.end())
    if eol == -1 or text[m.end() : eol].strip():
        return []
    found: list[SecretMatch] = []
    pos = eol + 1
    while pos < len(text):
        nxt = text.find("\n", pos)
        nxt = len(text) if nxt == -1 else nxt
        line = text[pos:nxt]
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            if len(line) - len(line.lstrip(" \t")) <= indent:
                break
            vm = None if _NESTED_KEY.match(line) else _LINE_VALUE.match(line)
            if vm and not _placeholder(vm.group("value")):
                found.append(SecretMatch("SECRET", pos + vm.start("value"), pos + vm.end("value"), "secret-block", 0.8))
        pos = nxt + 1
    return found


# A long random token anywhere: mixed case and digits, high entropy. Paths, names and the
# identifiers of ``is_benign_identifier`` are not random in this sense; OpenSSH public keys
# (``ssh-ed25519 AAAA...``) are public.
_RANDOM_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_.-])[A-Za-z0-9+/_-]{24,}={0,2}(?![A-Za-z0-9+/_=.-])")
_PUBLIC_KEY_PREFIX = re.compile(r"(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com)[ \t]+$")
_WORDISH = re.compile(r"[A-Z]?[a-z]{2,}")


def _reads_as_words(value: str) -> bool:
    """Words joined in CamelCase or snake_case (ValAccuracy2, churn_model_final) cover most of the value.

    A word here has a vowel in three of its letters or more: random letters have about one in five.
    """
    words = [w for w in _WORDISH.findall(value) if sum(c in "aeiouAEIOU" for c in w) * 10 >= len(w) * 3]
    return sum(len(w) for w in words) * 5 >= len(value) * 3


def _random_tokens(text: str) -> list[SecretMatch]:
    found: list[SecretMatch] = []
    for m in _RANDOM_TOKEN.finditer(text):
        token = m.group(0)
        if _classes(token) < 3 or shannon_entropy(token) < 4.2:
            continue
        if "/" in token and any((seg.isalpha() and seg.islower()) or seg[:1] == "." for seg in token.split("/") if seg):
            continue  # a path: some segment is a plain word
        if _reads_as_words(token):
            continue
        if _PUBLIC_KEY_PREFIX.search(text, max(0, m.start() - 40), m.start()):
            continue
        if is_benign_identifier(token):
            continue
        found.append(SecretMatch("SECRET", m.start(), m.end(), "high-entropy-token", 0.6))
    return found


def _rules_for(low: str) -> list[SecretRule]:
    return [r for r in SECRET_RULES if not r.keywords or any(k in low for k in r.keywords)]


def find_secrets(text: str) -> list[SecretMatch]:
    """Every secret in ``text``, by position; overlapping findings are merged (the earlier rule names it)."""
    if len(text) < 8:
        return []
    low = text.lower()
    found: list[tuple[int, SecretMatch]] = []
    for rank, rule in enumerate(_rules_for(low)):
        for m in rule.pattern.finditer(text):
            if rule.check is not None and not rule.check(text, m):
                continue
            start, end = m.span("secret") if "secret" in rule.pattern.groupindex else m.span()
            if end > start:
                found.append((rank, SecretMatch(rule.entity, start, end, rule.name, rule.score)))
    if ("=" in text or ":" in text) and any(k in low for k in _ASSIGNMENT_KEYWORDS):
        found += [(len(SECRET_RULES), s) for s in _assignments(text)]
    if len(text) >= 24:  # the shortest random token
        found += [(len(SECRET_RULES) + 1, s) for s in _random_tokens(text)]
    return _merge(found)


def _merge(found: list[tuple[int, SecretMatch]]) -> list[SecretMatch]:
    """Union overlapping findings; the entity, rule and score come from the best-ranked one among them."""
    merged: list[tuple[int, SecretMatch]] = []
    for rank, s in sorted(found, key=lambda f: (f[1].start, -f[1].end)):
        if merged and s.start < merged[-1][1].end:
            prev_rank, prev = merged[-1]
            best_rank, best = (prev_rank, prev) if prev_rank <= rank else (rank, s)
            merged[-1] = (
                best_rank,
                SecretMatch(best.entity, prev.start, max(prev.end, s.end), best.rule, max(prev.score, s.score)),
            )
        else:
            merged.append((rank, s))
    return [s for _, s in merged]


def has_secret(text: str) -> bool:
    """Whether ``text`` holds any secret ``find_secrets`` knows."""
    return bool(find_secrets(text))
