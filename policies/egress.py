"""The egress allow-list: every destination this process may open a connection to.

One rule for every client (the LLM client, the HTTP clients of tools, later the Kubernetes
API): a URL's host must be on the list, or the connection is refused before it is opened,
with an error that names the URL and the hosts that are allowed. The list is configuration
(``allowed_destinations``): loopback, the MLflow tracking server, the configured LLM base URL
and whatever the operator adds. Nothing a tool returns or a model proposes can add to it.

An entry is a host name (``mlflow.internal``: any port), ``host:port`` (that port only), a
``*.suffix`` wildcard (sub-domains of ``suffix``, not ``suffix`` itself) or a URL, whose
host and explicit port are taken. Loopback addresses (``localhost``, ``127.0.0.0/8``, ``::1``)
are allowed only while ``localhost`` (or one of them) is on the list, as it is by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from mlops_supervisor.policies.errors import UsageError

__all__ = [
    "LOOPBACK",
    "EgressDeniedError",
    "allowed_destinations",
    "check_egress",
    "egress_refusal",
    "host_allowed",
]

LOOPBACK: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""The loopback destinations: the model servers and routers this workspace runs."""

_NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss"})


class EgressDeniedError(UsageError):
    """A connection to a destination off the egress allow-list was refused before it was opened.

    A usage error (exit 2): the fix is configuration, adding the host to ``MLOPS_EGRESS_ALLOW``
    if it should be reachable.
    """


def _entry(entry: str) -> tuple[str, int | None]:
    """An allow-list entry as (host, port or None); a URL's host and explicit port."""
    text = entry.strip()
    if "://" in text:
        parts = urlsplit(text)
        return (parts.hostname or "").lower(), parts.port
    if text.startswith("[") and "]" in text:  # [::1]:8080
        host, _, rest = text[1:].partition("]")
        return host.lower(), int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host.lower(), int(port)
    return text.lower(), None


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, port: int | None, allowed: Iterable[str]) -> bool:
    """True when ``host`` (and ``port``) match an entry of ``allowed``."""
    host = host.lower().rstrip(".")
    for raw in allowed:
        name, only_port = _entry(raw)
        if not name or (only_port is not None and port != only_port):
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]) and host != name[2:]:
                return True
        elif host == name or (_is_loopback(name) and _is_loopback(host)):
            return True
    return False


def egress_refusal(url: str, allowed: Iterable[str]) -> str | None:
    """``None`` when ``url`` may be reached; otherwise why not, naming the URL and the allowed hosts."""
    allowed = tuple(allowed)
    shown = ", ".join(allowed) or "none"
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        return f"refused a connection to {url!r}: not a URL ({exc}); allowed hosts: {shown}"
    if parts.scheme.lower() not in _NETWORK_SCHEMES or not host:
        return (
            f"refused a connection to {url!r}: only http(s) URLs with a host are reachable, "
            f"and only on the egress allow-list ({shown})"
        )
    if host_allowed(host, port, allowed):
        return None
    return (
        f"refused a connection to {url!r}: host {host!r} is not on the egress allow-list ({shown}); "
        "if it should be reachable, add it to MLOPS_EGRESS_ALLOW"
    )


def check_egress(url: str, allowed: Iterable[str]) -> None:
    """Return when ``url`` may be reached; raise ``EgressDeniedError`` naming the URL and the allowed hosts."""
    refusal = egress_refusal(url, allowed)
    if refusal is not None:
        raise EgressDeniedError(refusal)


def allowed_destinations(
    *,
    tracking_uri: str | None = None,
    llm_base_url: str | None = None,
    kubernetes_api: str | None = None,
    extra: Iterable[str] = (),
) -> tuple[str, ...]:
    """The allow-list from configuration: loopback, then each configured destination's host, then ``extra``.

    A tracking URI without a network host (``sqlite:///...``, a path) adds nothing.
    """
    hosts: list[str] = list(LOOPBACK)
    for url in (tracking_uri, llm_base_url, kubernetes_api):
        if not url or "://" not in url:
            continue
        parts = urlsplit(url)
        if parts.scheme.lower() in _NETWORK_SCHEMES and parts.hostname:
            hosts.append(parts.hostname.lower())
    hosts += [e.strip() for e in extra if e.strip()]
    return tuple(dict.fromkeys(hosts))
