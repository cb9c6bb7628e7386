"""Alerts that reach someone: the alert model, its route, its payloads, delivery with retries, dedup and resolve.

A check (service metrics, drift, live quality, bias) reports an alert as a plain dict;
``alert_from_check`` makes it an ``Alert``, whose fingerprint (model, kind, version, subject)
is what deduplication keys on. ``resolve_route`` finds who owns the model and where its
alerts go: the policy's ``monitoring.routes``, else the spec's ``monitoring`` section, else
the policy's ``default_route``.

``deliver_alerts`` sends one notification per model per call: the alerts that are new or
firing again after ``repeat_interval_minutes``, and, once, the ones that were firing and no
longer are (only for kinds that were checked this time, and, where the caller says, only for the
version, feature or metric that was judged: a check that could not run resolves nothing). A
``webhook:`` route gets the Alertmanager webhook payload, a ``slack:`` route a
Slack incoming-webhook payload; every URL is held to the egress allow-list, with retries and
backoff on connection errors, timeouts, 429 and 5xx (honouring ``Retry-After``, capped). What
cannot be delivered, and what has nowhere else to go (``log``, ``email:``, no route), is
appended to the workspace's outbox ``monitoring/outbox.jsonl``, which ``status`` shows. Every
outcome is an ``alert_delivery`` audit line. Everything sent or written passes the redactor, and
a webhook's URL is shown and stored as its scheme and host only (its path is often its secret).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from mlops_supervisor.policies import Policy, redact_value
from mlops_supervisor.policies.egress import EgressDeniedError
from mlops_supervisor.tools._spec import MonitoringSpec
from mlops_supervisor.tools.core import ToolContext, context_egress, egress_client, model_lock, write_json_atomic
from mlops_supervisor.tools.monitoring._alerts import runbook

__all__ = [
    "ALERT_KINDS",
    "Alert",
    "AlertKind",
    "Route",
    "alert_from_check",
    "alert_name",
    "alerts_state_path",
    "deliver_alerts",
    "outbox_entries",
    "outbox_path",
    "resolve_route",
    "shown_route",
]

AlertKind = Literal["error_rate", "latency", "data_drift", "prediction_drift", "quality_decay", "bias"]
ALERT_KINDS: tuple[AlertKind, ...] = (
    "error_rate",
    "latency",
    "data_drift",
    "prediction_drift",
    "quality_decay",
    "bias",
)

_ALERT_NAMES: dict[str, str] = {
    "error_rate": "MlopsErrorRate",
    "latency": "MlopsLatency",
    "data_drift": "MlopsDataDrift",
    "prediction_drift": "MlopsPredictionDrift",
    "quality_decay": "MlopsQualityDecay",
    "bias": "MlopsBias",
}

_WHAT: dict[str, str] = {
    "error_rate": "error rate",
    "latency": "latency",
    "data_drift": "data drift",
    "prediction_drift": "prediction drift",
    "quality_decay": "live quality",
    "bias": "bias",
}

_NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that still fires
_MAX_BACKOFF = 30.0


def alert_name(kind: str) -> str:
    """The ``alertname`` label of an alert of ``kind``; the Prometheus rules use the same names."""
    return _ALERT_NAMES[kind]


class Alert(BaseModel):
    """One alert about one model: what fired, how bad, a line a person reads, and the runbook."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AlertKind
    model: str = Field(min_length=1)
    version: int | None = None
    subject: str = ""
    """The feature or metric the alert is about (``feature/metric`` for bias); empty for a whole version."""
    severity: Literal["warning", "critical"] = "warning"
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    runbook: dict[str, str]
    """verify, mitigate and rollback (the exact command)."""

    @property
    def fingerprint(self) -> str:
        """Who the alert is about, as 16 hex characters: the same alert firing again has the same one."""
        key = f"{self.model}|{self.kind}|{'' if self.version is None else self.version}|{self.subject}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


_CHECK_KEYS = frozenset(
    {"kind", "version", "message", "summary", "runbook", "feature", "metric", "subject", "severity"}
)


def alert_from_check(model: str, check: dict[str, Any]) -> Alert:
    """The ``Alert`` of one alert dict as the checks report it (``kind``, ``message``, ``runbook``, and
    ``version``, ``feature``, ``metric`` where they apply); other keys become ``details``.

    ``ValueError`` names a kind or version it cannot take.
    """
    kind = check.get("kind")
    if kind not in ALERT_KINDS:
        raise ValueError(f"alert kind {kind!r} is not one of: {', '.join(ALERT_KINDS)}")
    raw_version = check.get("version")
    version: int | None
    if raw_version is None or raw_version == "":
        version = None
    elif isinstance(raw_version, bool) or not str(raw_version).strip().isdigit():
        raise ValueError(f"alert version {raw_version!r} is not a version number (a whole number from 1)")
    else:
        version = int(str(raw_version).strip())
    feature, metric = check.get("feature"), check.get("metric")
    subject = str(check.get("subject") or "/".join(str(p) for p in (feature, metric) if p))
    summary = str(check.get("message") or check.get("summary") or "").strip()
    if not summary:
        on = f" version {version}" if version is not None else ""
        summary = f"{_WHAT[kind]} alert on {model}{on}" + (f" ({subject})" if subject else "")
    book = check.get("runbook")
    if not isinstance(book, dict) or not book:
        book = runbook(model, _WHAT[kind] + (f" of {subject}" if subject else ""))
    asked = check.get("severity")
    severity: Literal["warning", "critical"] = "critical" if kind == "error_rate" else "warning"
    if asked == "warning" or asked == "critical":
        severity = asked
    elif asked is not None:
        raise ValueError(f"alert severity {asked!r} is not one of: warning, critical")
    details = {k: v for k, v in check.items() if k not in _CHECK_KEYS}
    if feature is not None:
        details["feature"] = feature
    if metric is not None:
        details["metric"] = metric
    return Alert(
        kind=kind,
        model=model,
        version=version,
        subject=subject,
        severity=severity,
        summary=" ".join(summary.split()),
        details=details,
        runbook={str(k): str(v) for k, v in book.items()},
    )


class Route(BaseModel):
    """Who owns a model and where its alerts go, and which configuration said so."""

    model_config = ConfigDict(frozen=True)

    owner: str | None = None
    route: str | None = None
    """``log``, ``email:ADDRESS``, ``slack:#CHANNEL``, ``webhook:URL``; ``None`` when nothing names one."""
    source: Literal["policy", "spec", "default", "none"] = "none"


def resolve_route(policy: Policy, model: str, spec_monitoring: MonitoringSpec | None) -> Route:
    """Where ``model``'s alerts go: ``policy.monitoring.routes[model]``, else the spec's ``monitoring`` owner
    and alert, else ``policy.monitoring.default_route``, else nowhere (the outbox).

    A spec that names an owner but no alert route keeps its owner and takes the default route's destination.
    """
    rules = policy.monitoring
    rule = rules.routes.get(model)
    if rule is not None:
        return Route(owner=rule.owner, route=rule.alert, source="policy")
    default = rules.default_route
    spec_owner = spec_monitoring.owner if spec_monitoring is not None else None
    spec_alert = spec_monitoring.alert if spec_monitoring is not None else None
    if spec_alert is not None:
        return Route(owner=spec_owner, route=spec_alert, source="spec")
    if default is not None:
        return Route(owner=spec_owner or default.owner, route=default.alert, source="default")
    if spec_owner is not None:
        return Route(owner=spec_owner, route=None, source="spec")
    return Route()


# --- workspace files ------------------------------------------------------------------------


def alerts_state_path(workspace: Path) -> Path:
    """The dedup state: per fingerprint, status, first fired, last sent and sends."""
    return Path(workspace) / "monitoring" / "alerts.json"


def outbox_path(workspace: Path) -> Path:
    """The outbox: alerts that were not delivered, or had nowhere else to go, one JSON line each (0600)."""
    return Path(workspace) / "monitoring" / "outbox.jsonl"


def outbox_entries(workspace: Path) -> list[dict[str, Any]]:
    """Every outbox entry of ``workspace``, oldest first; empty when there is none."""
    path = outbox_path(workspace)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash: the rest still counts
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _append_outbox(workspace: Path, entry: dict[str, Any]) -> None:
    path = outbox_path(workspace)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write on an O_APPEND descriptor: processes never interleave a line
    finally:
        os.close(fd)


def _read_state(workspace: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(alerts_state_path(workspace).read_text("utf-8"))
    except FileNotFoundError:
        return {}
    alerts = data.get("alerts") if isinstance(data, dict) else None
    return {k: v for k, v in alerts.items() if isinstance(v, dict)} if isinstance(alerts, dict) else {}


@contextmanager
def _state_lock(workspace: Path) -> Iterator[None]:
    # one lock for the state file every model's deliveries share; held only to read or write it
    with model_lock(workspace, "monitoring/alerts.json"):
        yield


# --- time -----------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _stamp(value: datetime) -> str:
    return _utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return _utc(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
    except ValueError:
        return None


# --- payloads -------------------------------------------------------------------------------


def _labels(alert: Alert, owner: str | None) -> dict[str, str]:
    labels = {"alertname": alert_name(alert.kind), "kind": alert.kind, "model": alert.model}
    if alert.version is not None:
        labels["version"] = str(alert.version)
    labels["severity"] = alert.severity
    if owner:
        labels["owner"] = owner
    if alert.subject:
        labels["subject"] = alert.subject
    return labels


def _annotations(alert: Alert) -> dict[str, str]:
    notes = {
        "summary": alert.summary,
        "runbook_verify": alert.runbook.get("verify", ""),
        "runbook_mitigate": alert.runbook.get("mitigate", ""),
        "rollback": alert.runbook.get("rollback", ""),
    }
    if alert.details:
        notes["details"] = json.dumps(alert.details, sort_keys=True, default=str)
    return notes


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    return {k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])}


def receiver_name(model: str) -> str:
    """The receiver's name, in our webhook payloads and in the rendered Alertmanager configuration alike."""
    return f"mlops-{model}"


_Item = tuple[str, Alert, datetime]
"""An alert in a notification: its fingerprint, the alert as shown (redacted), when it started firing."""


def _alertmanager_payload(
    model: str,
    owner: str | None,
    firing: list[_Item],
    resolved: list[_Item],
    now: datetime,
) -> dict[str, Any]:
    """The Alertmanager webhook payload (version 4) of one notification."""
    items: list[dict[str, Any]] = [
        {
            "status": state,
            "labels": _labels(alert, owner),
            "annotations": _annotations(alert),
            "startsAt": _stamp(started),
            "endsAt": _NEVER if state == "firing" else _stamp(now),
            "generatorURL": "",
            "fingerprint": fingerprint,
        }
        for state, group in (("firing", firing), ("resolved", resolved))
        for fingerprint, alert, started in group
    ]
    return {
        "version": "4",
        "groupKey": f'{{}}:{{model="{model}"}}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver_name(model),
        "groupLabels": {"model": model},
        "commonLabels": _common([i["labels"] for i in items]),
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": "",
        "alerts": items,
    }


def _redacted(alert: Alert, redact: Callable[[Any], Any]) -> Alert:
    """``alert`` with every string of it redacted (its fingerprint is taken before, from the original)."""
    return Alert.model_validate(redact(alert.model_dump(mode="json")))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_payload(
    model: str, owner: str | None, channel: str, firing: list[_Item], resolved: list[_Item]
) -> dict[str, Any]:
    """A Slack incoming-webhook payload: ``text`` (the notification's fallback), ``blocks``, ``channel``."""
    head = f"[FIRING:{len(firing)}] " if firing else ""
    head += f"[RESOLVED:{len(resolved)}] " if resolved else ""
    title = f"{head}{model}" + (f" (owner {owner})" if owner else "")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": _clip(title, 150)}}]
    lines = []
    for _, alert, state in [(*i[:2], "firing") for i in firing] + [(*i[:2], "resolved") for i in resolved]:
        on = f" v{alert.version}" if alert.version is not None else ""
        subject = f" {alert.subject}" if alert.subject else ""
        lines.append(f"{state} {alert.kind}{on}{subject} ({alert.severity}): {alert.summary}")
        text = f"*{state.upper()}* `{alert.kind}`{on}{subject} ({alert.severity})\n{alert.summary}"
        if state == "firing":
            text += (
                f"\n*Verify:* {alert.runbook.get('verify', '')}\n*Mitigate:* {alert.runbook.get('mitigate', '')}"
                f"\n*Rollback:* `{alert.runbook.get('rollback', '')}`"
            )
        if len(blocks) < 49:  # Slack takes at most 50 blocks; the context block is the last
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, 3000)}})
    fingerprints = ", ".join(fp for fp, _, _ in firing + resolved)
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(f"fingerprints {fingerprints}", 2000)}]}
    )
    return {"channel": channel, "text": title + "\n" + "\n".join(lines), "blocks": blocks}


# --- sending --------------------------------------------------------------------------------


def _retry_after(response: httpx.Response, now: float) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class _Outcome(BaseModel):
    delivered: bool = False
    attempts: int = 0
    http_status: int | None = None
    reason: str | None = None


def _post(
    client: httpx.Client,
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int,
    base_delay: float,
    retry_after_cap: float,
    sleep: Callable[[float], None],
) -> _Outcome:
    """POST ``payload`` to ``url`` with up to ``attempts`` tries: connection errors, timeouts, 429 and 5xx
    are tried again after ``base_delay`` doubling (or the ``Retry-After`` asked for, at most
    ``retry_after_cap`` seconds); a refusal by the egress allow-list or another 4xx is not."""
    outcome = _Outcome()
    for attempt in range(1, attempts + 1):
        wait = min(base_delay * 2 ** (attempt - 1), _MAX_BACKOFF)
        try:
            response = client.post(url, json=payload)
        except EgressDeniedError:  # its message holds the whole URL, and a webhook's path is often its secret
            return _Outcome(attempts=outcome.attempts, reason=_refusal(url))
        except httpx.UnsupportedProtocol as exc:
            return _Outcome(attempts=attempt, reason=_failure(exc, url))
        except httpx.TransportError as exc:  # connection refused or reset, timeouts
            outcome = _Outcome(attempts=attempt, reason=_failure(exc, url))
        except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # a URL httpx cannot take: no use retrying
            return _Outcome(attempts=attempt, reason=_failure(exc, url))
        else:
            outcome = _Outcome(attempts=attempt, http_status=response.status_code)
            if response.is_success:
                return _Outcome(delivered=True, attempts=attempt, http_status=response.status_code)
            outcome.reason = f"the receiver answered HTTP {response.status_code}"
            if response.status_code != 429 and response.status_code < 500:
                return outcome  # the request itself is wrong: sending it again changes nothing
            asked = _retry_after(response, time.time())
            if asked is not None:
                wait = min(asked, retry_after_cap)
        if attempt < attempts:
            sleep(wait)
    outcome.reason = f"{outcome.reason} (after {outcome.attempts} attempt(s))"
    return outcome


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: never its user, path or query, where a webhook keeps its secret."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "(a URL that does not parse)"
    if not parts.scheme or not parts.hostname:
        return "(a URL without a scheme and host)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


def shown_route(route: str | None) -> str | None:
    """``route`` as it may be shown or stored: a ``webhook:`` URL cut to its scheme and host; the rest as is."""
    if route is None:
        return None
    kind, sep, target = route.partition(":")
    return f"webhook:{_origin(target)}" if kind == "webhook" and sep else route


def _refusal(url: str) -> str:
    """Why the egress allow-list refused ``url``, naming its host only."""
    try:
        parts = urlsplit(url.strip())
        host, scheme = parts.hostname, parts.scheme.lower()
    except ValueError:
        return f"refused a connection to {_origin(url)}: not a URL"
    if scheme not in ("http", "https") or not host:
        return f"refused a connection to {_origin(url)}: only http(s) URLs with a host are reachable"
    return (
        f"refused a connection to {_origin(url)}: host {host!r} is not on the egress allow-list; if it should be "
        "reachable, add it to MLOPS_EGRESS_ALLOW"
    )


def _failure(exc: BaseException, url: str) -> str:
    """``exc`` as a reason naming the URL's origin only: wherever the message quotes the URL, its path,
    query or user, they are cut out."""
    text = str(exc).replace(url.strip(), _origin(url))
    after = url.strip().partition("://")[2] or url.strip()
    cut = min([i for i in (after.find(c) for c in "/?#") if i >= 0], default=len(after))
    netloc, rest = after[:cut], after[cut:]
    for piece in sorted({after, rest, netloc.rpartition("@")[0]}, key=len, reverse=True):
        if len(piece) > 1:
            text = text.replace(piece, "…")
    return f"{type(exc).__name__} posting to {_origin(url)}" + (f": {text}" if text else "")


def _destination(ctx: ToolContext, route: str | None) -> tuple[str, str | None, str | None]:
    """(format, URL, why not) of a route: ``alertmanager`` or ``slack`` with a URL, or the outbox's reason."""
    if route is None:
        return (
            "outbox",
            None,
            "no alert route: name one in the spec's monitoring.alert, or the policy's monitoring.routes or "
            "monitoring.default_route",
        )
    if route == "log":
        return "outbox", None, "the route is log: the workspace outbox is where its alerts go"
    kind, _, target = route.partition(":")
    if kind == "webhook":
        return "alertmanager", target, None
    if kind == "slack":
        if not ctx.slack_webhook_url:
            return "slack", None, f"route {route} needs a Slack incoming-webhook URL: set MLOPS_SLACK_WEBHOOK_URL"
        return "slack", ctx.slack_webhook_url, None
    if kind == "email":
        return (
            "outbox",
            None,
            "e-mail is not sent from here: the outbox keeps the alert (Alertmanager sends e-mail: "
            "`mlops-supervisor alert-rules SPEC` writes its configuration)",
        )
    return "outbox", None, f"route {route!r} is not one alerts can take (log, email:, slack:, webhook:)"


def deliver_alerts(
    ctx: ToolContext,
    model: str,
    route: Route,
    firing: list[Alert],
    checked: set[str],
    *,
    judged: Callable[[str, int | None, str], bool] | None = None,
    now: datetime | None = None,
    transport: httpx.BaseTransport | None = None,
    base_delay: float = 1.0,
    retry_after_cap: float = 5.0,
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send ``model``'s alerts that need sending to ``route``, as one notification; returns what happened.

    ``firing`` are the alerts the checks raised now; ``checked`` the kinds that were evaluated: an
    alert that was firing and is not in ``firing`` resolves only when its kind was checked (a check
    that could not run resolves nothing). Where a kind is judged piece by piece (per version, feature
    or metric), ``judged(kind, version, subject)`` says instead whether that alert's own piece was
    judged this time; given, it alone decides what resolves. New alerts, and alerts
    last sent ``repeat_interval_minutes`` ago or more, are sent; the rest are suppressed. After
    ``policy.monitoring.alert_attempts`` failed tries the notification goes to the outbox and the
    alerts are not marked sent, so the next call tries again. Routes with nowhere else to go
    (``log``, ``email:``, none) deliver to the outbox, and that counts as sent.

    Returns ``{status, sent, resolved, suppressed, outbox, attempts, http_status, route, owner,
    reason, fingerprints, resolved_fingerprints}``: ``status`` is ``delivered``, ``failed`` (to the
    outbox after a failure or a refusal), ``outbox`` (the route's destination is the outbox) or
    ``nothing`` (nothing to send); the counts are alerts. ``route`` is shown as ``shown_route`` does
    (a webhook's scheme and host only), here and in the outbox and the audit log.
    """
    foreign = sorted({a.model for a in firing if a.model != model})
    if foreign:
        raise ValueError(f"deliver_alerts({model!r}) was handed alerts of other models: {', '.join(foreign)}")
    unknown = sorted(set(checked) - set(ALERT_KINDS))
    if unknown:
        raise ValueError(f"checked kinds {unknown} are not alert kinds ({', '.join(ALERT_KINDS)})")
    moment = _utc(now if now is not None else ctx.clock())
    rules = ctx.policy.monitoring
    repeat = timedelta(minutes=rules.repeat_interval_minutes)
    redact: Callable[[Any], Any] = lambda value: redact_value(ctx.redactor, value)  # noqa: E731
    route_shown = redact(shown_route(route.route)) if route.route is not None else None
    current = {a.fingerprint: a for a in firing}

    with model_lock(ctx.workspace, f"alerts:{model}"):  # two monitors never send the same alert twice
        with _state_lock(ctx.workspace):
            state = _read_state(ctx.workspace)
        to_send: list[_Item] = []
        suppressed: list[str] = []
        for fp, alert in current.items():
            entry = state.get(fp) or {}
            ongoing = entry.get("status") == "firing"
            last = _parse(entry.get("last_sent")) if ongoing else None
            if last is not None and moment - last < repeat:
                suppressed.append(fp)
            else:
                started = (_parse(entry.get("first_fired")) if ongoing else None) or moment
                to_send.append((fp, alert, started))
        resolving: list[_Item] = []  # the stored alert is redacted already: its fingerprint is the state's key
        quietly: list[str] = []  # were firing, never sent: nobody to tell
        for fp, entry in state.items():
            if entry.get("model") != model or entry.get("status") != "firing" or fp in current:
                continue
            if not (_was_judged(judged, entry) if judged is not None else entry.get("kind") in checked):
                continue
            if entry.get("last_sent") is None:
                quietly.append(fp)
                continue
            try:
                old = Alert.model_validate(entry["alert"])
            except (KeyError, ValueError):
                quietly.append(fp)
                continue
            resolving.append((fp, old, _parse(entry.get("first_fired")) or moment))

        result: dict[str, Any] = {
            "status": "nothing",
            "sent": 0,
            "resolved": 0,
            "suppressed": len(suppressed),
            "outbox": 0,
            "attempts": 0,
            "http_status": None,
            "route": route_shown,
            "owner": redact(route.owner),
            "reason": None,
            "fingerprints": [fp for fp, _, _ in to_send],
            "resolved_fingerprints": [fp for fp, _, _ in resolving],
        }
        delivered = False
        if to_send or resolving:
            delivered = _notify(
                ctx,
                model,
                route,
                to_send,
                resolving,
                moment,
                result,
                redact,
                transport=transport,
                base_delay=base_delay,
                retry_after_cap=retry_after_cap,
                timeout=timeout,
                sleep=sleep,
            )
        sent_now = {fp for fp, _, _ in to_send} if delivered else set()
        with _state_lock(ctx.workspace):
            state = _read_state(ctx.workspace)  # other models' entries may have changed meanwhile
            stamp = _stamp(moment)
            for alert in firing:
                fp = alert.fingerprint
                entry = state.get(fp) or {}
                if entry.get("status") != "firing":
                    entry = {"first_fired": stamp, "last_sent": None, "sends": 0}
                entry.update(
                    model=model,
                    kind=alert.kind,
                    version=alert.version,
                    subject=redact(alert.subject),
                    status="firing",
                    last_seen=stamp,
                    alert=redact(alert.model_dump(mode="json")),
                )
                if fp in sent_now:
                    entry["last_sent"] = stamp
                    entry["sends"] = int(entry.get("sends", 0)) + 1
                state[fp] = entry
            for fp in [fp for fp, _, _ in resolving if delivered] + quietly:
                if fp in state:
                    state[fp].update(status="resolved", resolved_at=stamp)
            write_json_atomic(alerts_state_path(ctx.workspace), {"version": 1, "alerts": state})
    if delivered:
        result["sent"], result["resolved"] = len(to_send), len(resolving)
    return result


def _was_judged(judged: Callable[[str, int | None, str], bool], entry: dict[str, Any]) -> bool:
    """Whether ``judged`` says the stored alert ``entry``'s own piece (version, subject) was judged this time."""
    raw = entry.get("version")
    version = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    return bool(judged(str(entry.get("kind")), version, str(entry.get("subject") or "")))


def _notify(
    ctx: ToolContext,
    model: str,
    route: Route,
    firing: list[_Item],
    resolving: list[_Item],
    now: datetime,
    result: dict[str, Any],
    redact: Callable[[Any], Any],
    *,
    transport: httpx.BaseTransport | None,
    base_delay: float,
    retry_after_cap: float,
    timeout: float,
    sleep: Callable[[float], None],
) -> bool:
    """Send one notification (or write it to the outbox), audit the outcome, fill ``result``; whether the
    alerts count as sent."""
    fmt, url, why_not = _destination(ctx, route.route)
    # nothing raw reaches a receiver, the outbox or the audit log: the payload is built from redacted alerts
    # (redacting the payload whole would take its envelope for secrets: groupKey is a "key")
    shown = [(fp, _redacted(a, redact), started) for fp, a, started in firing]
    gone = [(fp, _redacted(a, redact), started) for fp, a, started in resolving]
    owner = redact(route.owner)
    if fmt == "slack":
        channel = redact((route.route or "").partition(":")[2])
        payload = _slack_payload(model, owner, channel, shown, gone)
    else:
        payload = _alertmanager_payload(model, owner, shown, gone, now)
    outcome = _Outcome(reason=why_not)
    if url is not None:
        with egress_client(context_egress(ctx), transport=transport, timeout=timeout) as client:
            outcome = _post(
                client,
                url,
                payload,
                attempts=ctx.policy.monitoring.alert_attempts,
                base_delay=base_delay,
                retry_after_cap=retry_after_cap,
                sleep=sleep,
            )
    if outcome.delivered:
        status = "delivered"
    elif fmt == "outbox":
        status = "outbox"  # the outbox is this route's destination
    else:
        status = "failed"
    reason = redact(outcome.reason) if outcome.reason else None
    fingerprints = [fp for fp, _, _ in firing]
    resolved = [fp for fp, _, _ in resolving]
    kinds = sorted({a.kind for _, a, _ in firing + resolving})
    if not outcome.delivered:
        entry = redact(
            {
                "ts": _stamp(now),
                "model": model,
                "owner": route.owner,
                "route": shown_route(route.route),
                "status": status,
                "reason": reason,
                "attempts": outcome.attempts,
                "http_status": outcome.http_status,
                "fingerprints": fingerprints,
                "resolved": resolved,
                "kinds": kinds,
                "summaries": [a.summary for _, a, _ in shown] + [f"resolved: {a.summary}" for _, a, _ in gone],
                "format": fmt,
            }
        )
        _append_outbox(ctx.workspace, {**entry, "payload": payload})  # the payload is redacted already
        result["outbox"] = 1
    ctx.audit.append(
        "alert_delivery",
        **redact(
            {
                "model": model,
                "route": shown_route(route.route),
                "owner": route.owner,
                "status": status,
                "attempts": outcome.attempts,
                "http_status": outcome.http_status,
                "fingerprints": fingerprints,
                "kinds": kinds,
                "resolved": resolved,
                "reason": reason,
            }
        ),
    )
    result.update(status=status, attempts=outcome.attempts, http_status=outcome.http_status, reason=reason)
    return outcome.delivered or status == "outbox"
