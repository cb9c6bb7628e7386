"""Secrets in a proposed call's arguments: the call is refused, never rewritten and run.

A model that puts a key, token or password into a tool's arguments may be sending it
somewhere (exfiltration); replacing it with a placeholder and running the call would hide
that and run something other than what was asked. So the decision is a denial with
``secret_in_arguments``, made on the arguments as proposed, in memory; what is recorded of
the call (audit line, checkpoint) is its redacted form. Personal data that is not a secret
is no reason to refuse: it is redacted wherever it is stored, like any other text.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mlops_supervisor.policies.decisions import Decision, ReasonCode
from mlops_supervisor.policies.redaction import Finding, Redactor, replace_spans
from mlops_supervisor.policies.secrets import SECRET_ENTITIES as _REDACTOR_SECRETS
from mlops_supervisor.policies.secrets import secret_value_for_key

__all__ = [
    "SECRET_ENTITIES",
    "ArgumentSecret",
    "deny_secret_in_arguments",
    "is_secret_entity",
    "secrets_in_arguments",
    "without_secrets",
]

SECRET_ENTITIES: frozenset[str] = _REDACTOR_SECRETS | {"SECRET_ASSIGNMENT"}
"""The redactors' entity types that are credentials, not personal data (``policies.secrets`` names them)."""

# A recognizer added later names its entity after what it finds (AWS_SECRET_KEY, GITHUB_TOKEN,
# SLACK_WEBHOOK, URL_PASSWORD, AZURE_CONNECTION_STRING ...): these words mark a credential, and no
# personal-data entity of Presidio's contains one, so a new secret recognizer needs no change here.
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "WEBHOOK", "CONNECTION_STRING", "JWT", "BEARER")


def is_secret_entity(entity: str) -> bool:
    """True when ``entity`` names a credential (a key, token, password or private key), not personal data."""
    name = entity.upper()
    return name in SECRET_ENTITIES or any(word in name for word in _SECRET_WORDS)


@dataclass(frozen=True)
class ArgumentSecret:
    """A secret found in a call's arguments: which argument holds it and its entity type, never its value."""

    argument: str
    """The argument's path: ``text``, ``options.token`` or ``items[2]``."""
    entity: str


def _strings(value: Any, path: str) -> Iterator[tuple[str, str, str | None]]:
    """(path, text, the mapping key it sits under) for every string inside ``value``, mapping keys included."""
    if isinstance(value, str):
        yield path, value, None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                yield inner, key, None
                if isinstance(item, str | int) and not isinstance(item, bool):
                    yield inner, str(item), key
                    continue
            yield from _strings(item, inner)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _secret_findings(redactor: Redactor, text: str) -> list[Finding]:
    """The secrets in ``text``: the redactor's secrets-only scan when it has one (no model loads), else its findings."""
    scan = getattr(redactor, "secret_findings", None)
    found: list[Finding] = scan(text) if callable(scan) else redactor.findings(text)
    return [f for f in found if is_secret_entity(f.entity)]


def secrets_in_arguments(redactor: Redactor, args: Mapping[str, Any]) -> list[ArgumentSecret]:
    """Every secret in ``args``, by argument and entity type (never the value), in order.

    A secret is what the redactor finds of a secret entity, or a value under a key that names a
    secret (``db_password``, ``client_secret``: what ``redact_value`` stores as ``<SECRET>``). The
    argument's path is redacted too: a secret used as a mapping key would otherwise be in it.
    """
    found: list[ArgumentSecret] = []
    for path, text, key in _strings(args, ""):
        entities = [f.entity for f in _secret_findings(redactor, text)]
        if not entities and key is not None and secret_value_for_key(key, text):
            entities = ["SECRET"]
        for entity in entities:
            secret = ArgumentSecret(redactor.redact_text(path), entity)
            if secret not in found:
                found.append(secret)
    return found


def without_secrets(redactor: Redactor, value: Any, key: str | None = None) -> Any:
    """``value`` with each secret ``secrets_in_arguments`` reports replaced by its placeholder, the rest untouched.

    What is stored of a refused call is this, then redacted as usual: it holds none of the secrets the
    call was refused for, even where the redactor's ``redact_text`` would keep one its secret scan finds.
    """
    scalar = isinstance(value, str | int) and not isinstance(value, bool)
    if key is not None and scalar and secret_value_for_key(key, str(value)):
        return "<SECRET>"  # the value as a whole is the secret: what redact_value stores for it too
    if isinstance(value, str):
        return replace_spans(value, _secret_findings(redactor, value))
    if isinstance(value, Mapping):
        return {
            (without_secrets(redactor, k) if isinstance(k, str) else k): without_secrets(
                redactor, v, k if isinstance(k, str) else None
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(without_secrets(redactor, v) for v in value)
    return value


def deny_secret_in_arguments(action: str, secrets: list[ArgumentSecret]) -> Decision | None:
    """A ``secret_in_arguments`` denial of ``action`` naming where ``secrets`` sit; ``None`` when there are none."""
    if not secrets:
        return None
    where = ", ".join(f"{s.entity} in {s.argument!r}" for s in secrets)
    return Decision.deny(
        action,
        ReasonCode.SECRET_IN_ARGUMENTS,
        f"the arguments of {action!r} hold a secret ({where}); a call that carries a credential is refused as a "
        "possible exfiltration and nothing was run. Pass the name of a configured secret or environment variable "
        "instead of its value.",
    )
