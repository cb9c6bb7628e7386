"""Alert delivery against a real webhook receiver on loopback: routes, payloads, retries, dedup, resolve, outbox."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops_supervisor.policies import AuditLog, PatternRedactor, Policy, Redactor, load_policy
from mlops_supervisor.tools._spec import MonitoringSpec
from mlops_supervisor.tools.core import ToolContext
from mlops_supervisor.tools.monitoring import (
    Alert,
    Route,
    alert_from_check,
    deliver_alerts,
    outbox_entries,
    resolve_route,
)
from mlops_supervisor.tools.monitoring._alerting import alerts_state_path
from tests.conftest import CliRun

MODEL = "income"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
EMAIL = "bob.smith@example.com"
TOKEN = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3sXyZ9"


class Receiver:
    """A webhook receiver on loopback: records every POST and answers from a script, then 200."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]] | None = None, delay: float = 0.0) -> None:
        self.answers = list(answers or [])
        self.delay = delay
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.seen.append({"path": self.path, "body": body.decode("utf-8"), "at": time.monotonic()})
                    status, headers = receiver.answers.pop(0) if receiver.answers else (200, {})
                time.sleep(receiver.delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(s["body"]) for s in self.seen]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


def _receiver(made: list[Receiver], answers: list[tuple[int, dict[str, str]]] | None = None, **kw: Any) -> Receiver:
    r = Receiver(answers, **kw)
    made.append(r)
    return r


def _ctx(tmp_path: Path, *, policy: Policy | None = None, redactor: Redactor | None = None, **kw: Any) -> ToolContext:
    ws = tmp_path / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    return ToolContext(
        workspace=ws,
        audit=AuditLog(ws / "audit.jsonl"),
        policy=policy or load_policy(None),
        redactor=redactor or PatternRedactor(),
        **kw,
    )


def _policy(tmp_path: Path, monitoring: dict[str, Any]) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"monitoring": monitoring}), "utf-8")
    return load_policy(path)


def _bias(summary: str = "sex: demographic parity difference 0.31 (limit 0.25)") -> Alert:
    return alert_from_check(
        MODEL,
        {"kind": "bias", "version": 3, "feature": "sex", "metric": "demographic_parity_difference", "message": summary},
    )


def _latency() -> Alert:
    return alert_from_check(
        MODEL, {"kind": "latency", "version": "3", "message": "version 3 p99 400 ms (limit 250 ms)"}
    )


def _deliveries(ctx: ToolContext) -> list[dict[str, Any]]:
    return [r for r in ctx.audit.records() if r["event"] == "alert_delivery"]


def _webhook(r: Receiver, owner: str = "alice") -> Route:
    return Route(owner=owner, route=f"webhook:{r.url}", source="spec")


FAST = {"base_delay": 0.01}


# --- alert_from_check and resolve_route -------------------------------------------------------


def test_alert_from_check_takes_the_dicts_the_checks_report() -> None:
    """Today's alert dicts become Alerts: the version as a number, the feature or metric as subject, the rest as
    details; the fingerprint keys on model, kind, version and subject only."""
    metrics = alert_from_check(MODEL, {"kind": "error_rate", "version": "2", "message": "v2 errors on 9%"})
    assert (metrics.version, metrics.subject, metrics.severity) == (2, "", "critical")
    assert metrics.runbook["rollback"] == f"mlops-supervisor rollback {MODEL}"
    drift = alert_from_check(MODEL, {"kind": "data_drift", "feature": "age", "message": "age drifted", "psi": 0.4})
    assert (drift.version, drift.subject, drift.severity, drift.details) == (
        None,
        "age",
        "warning",
        {"psi": 0.4, "feature": "age"},
    )
    bias = _bias()
    assert bias.subject == "sex/demographic_parity_difference"
    assert bias.fingerprint == _bias("another wording, same alert").fingerprint
    assert (
        bias.fingerprint
        != alert_from_check(
            MODEL, {"kind": "bias", "version": 4, "feature": "sex", "metric": "demographic_parity_difference"}
        ).fingerprint
    )
    assert len(bias.fingerprint) == 16
    with pytest.raises(ValueError, match="alert kind 'cpu' is not one of: error_rate, latency"):
        alert_from_check(MODEL, {"kind": "cpu", "message": "hot"})
    with pytest.raises(ValueError, match="alert version 'three'"):
        alert_from_check(MODEL, {"kind": "latency", "version": "three"})


def test_route_precedence_policy_then_spec_then_default_then_none(tmp_path: Path) -> None:
    """policy.monitoring.routes[model] > the spec's monitoring owner/alert > the policy's default_route > none."""
    spec = MonitoringSpec(owner="alice", alert="slack:#income-oncall")
    both = _policy(
        tmp_path,
        {
            "routes": {MODEL: {"owner": "carol", "alert": "webhook:https://hooks.example.com/a"}},
            "default_route": {"owner": "ops", "alert": "email:ops@example.com"},
        },
    )
    assert resolve_route(both, MODEL, spec) == Route(
        owner="carol", route="webhook:https://hooks.example.com/a", source="policy"
    )
    assert resolve_route(both, "other", spec) == Route(owner="alice", route="slack:#income-oncall", source="spec")
    assert resolve_route(both, "other", None) == Route(owner="ops", route="email:ops@example.com", source="default")
    owner_only = MonitoringSpec(owner="alice")
    assert resolve_route(both, "other", owner_only) == Route(
        owner="alice", route="email:ops@example.com", source="default"
    )
    bare = load_policy(None)
    assert resolve_route(bare, MODEL, None) == Route(owner=None, route=None, source="none")
    assert resolve_route(bare, MODEL, owner_only) == Route(owner="alice", route=None, source="spec")


# --- dedup and resolve ------------------------------------------------------------------------


def test_an_alert_is_sent_once_within_the_repeat_interval_and_again_after(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    """Sent at once; suppressed 10 minutes later; sent again after repeat_interval_minutes (240 by default)."""
    ctx, r = _ctx(tmp_path), _receiver(receivers)
    alert = _bias()
    first = deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=T0, **FAST)
    assert (first["status"], first["sent"], first["suppressed"], first["attempts"]) == ("delivered", 1, 0, 1)
    assert [a["fingerprint"] for a in r.bodies()[0]["alerts"]] == [alert.fingerprint]
    again = deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=T0 + timedelta(minutes=10), **FAST)
    assert (again["status"], again["sent"], again["suppressed"]) == ("nothing", 0, 1)
    assert len(r.seen) == 1
    almost = T0 + timedelta(minutes=239)
    assert deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=almost, **FAST)["sent"] == 0
    later = deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=T0 + timedelta(minutes=240), **FAST)
    assert (later["status"], later["sent"]) == ("delivered", 1)
    assert len(r.seen) == 2
    # the repeat still says when it started firing
    assert r.bodies()[1]["alerts"][0]["startsAt"] == "2025-06-01T12:00:00.000Z"
    state = json.loads(alerts_state_path(ctx.workspace).read_text("utf-8"))["alerts"][alert.fingerprint]
    assert (state["status"], state["sends"], state["first_fired"]) == ("firing", 2, "2025-06-01T12:00:00.000Z")
    lines = _deliveries(ctx)
    assert [(x["status"], x["attempts"], x["fingerprints"]) for x in lines] == [
        ("delivered", 1, [alert.fingerprint]),
        ("delivered", 1, [alert.fingerprint]),
    ]
    assert lines[0]["owner"] == "alice" and lines[0]["kinds"] == ["bias"] and lines[0]["http_status"] == 200


def test_a_resolved_alert_is_sent_once_and_only_when_its_kind_was_checked(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    """An alert that stops firing is resolved once, in a notification of its own status; an alert whose kind
    was not checked this time (its check could not run) stays firing."""
    ctx, r = _ctx(tmp_path), _receiver(receivers)
    bias, latency = _bias(), _latency()
    deliver_alerts(ctx, MODEL, _webhook(r), [bias, latency], {"bias", "latency"}, now=T0, **FAST)
    assert len(r.seen) == 1 and len(r.bodies()[0]["alerts"]) == 2
    # latency was checked and is quiet; bias could not be checked (no labels yet)
    out = deliver_alerts(ctx, MODEL, _webhook(r), [], {"latency"}, now=T0 + timedelta(minutes=5), **FAST)
    assert (out["status"], out["resolved"], out["resolved_fingerprints"]) == ("delivered", 1, [latency.fingerprint])
    body = r.bodies()[1]
    assert body["status"] == "resolved"
    assert [(a["fingerprint"], a["status"]) for a in body["alerts"]] == [(latency.fingerprint, "resolved")]
    assert body["alerts"][0]["endsAt"] == "2025-06-01T12:05:00.000Z"
    assert body["alerts"][0]["startsAt"] == "2025-06-01T12:00:00.000Z"
    # once: the next quiet check sends nothing
    out = deliver_alerts(ctx, MODEL, _webhook(r), [], {"latency"}, now=T0 + timedelta(minutes=6), **FAST)
    assert (out["status"], len(r.seen)) == ("nothing", 2)
    # now bias is checked and quiet: resolved once too
    out = deliver_alerts(ctx, MODEL, _webhook(r), [], {"bias", "latency"}, now=T0 + timedelta(minutes=7), **FAST)
    assert out["resolved_fingerprints"] == [bias.fingerprint] and len(r.seen) == 3
    assert deliver_alerts(ctx, MODEL, _webhook(r), [], {"bias"}, now=T0 + timedelta(minutes=8), **FAST)["resolved"] == 0
    assert len(r.seen) == 3
    assert [x["resolved"] for x in _deliveries(ctx)] == [[], [latency.fingerprint], [bias.fingerprint]]
    # firing again after it resolved is a new alert: sent at once, with a new start
    out = deliver_alerts(ctx, MODEL, _webhook(r), [bias], {"bias"}, now=T0 + timedelta(minutes=9), **FAST)
    assert out["sent"] == 1 and r.bodies()[3]["alerts"][0]["startsAt"] == "2025-06-01T12:09:00.000Z"


def test_alerts_of_one_model_are_one_notification_and_other_models_are_left_alone(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    """Grouped per model per call; a quiet check of one model resolves nothing of another."""
    ctx, r = _ctx(tmp_path), _receiver(receivers)
    other = alert_from_check("other", {"kind": "latency", "version": 1, "message": "slow"})
    deliver_alerts(ctx, "other", _webhook(r), [other], {"latency"}, now=T0, **FAST)
    deliver_alerts(ctx, MODEL, _webhook(r), [_bias(), _latency()], {"bias", "latency"}, now=T0, **FAST)
    assert [len(b["alerts"]) for b in r.bodies()] == [1, 2]
    deliver_alerts(ctx, MODEL, _webhook(r), [], {"bias", "latency"}, now=T0 + timedelta(minutes=1), **FAST)
    assert [a["labels"]["model"] for a in r.bodies()[2]["alerts"]] == [MODEL, MODEL]
    with pytest.raises(ValueError, match="alerts of other models: other"):
        deliver_alerts(ctx, MODEL, _webhook(r), [other], {"latency"}, now=T0)


def test_two_monitors_at_once_send_an_alert_once(tmp_path: Path, receivers: list[Receiver]) -> None:
    """Deliveries of one model are serialised by its lock: a second monitor sees the first one's send."""
    ctx, r = _ctx(tmp_path), _receiver(receivers, delay=0.3)
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(deliver_alerts(ctx, MODEL, _webhook(r), [_bias()], {"bias"}, now=T0))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(r.seen) == 1
    assert sorted((x["sent"], x["suppressed"]) for x in results) == [(0, 1), (1, 0)]


# --- retries and failures ---------------------------------------------------------------------


def test_a_receiver_failing_twice_gets_the_alert_on_the_third_try(tmp_path: Path, receivers: list[Receiver]) -> None:
    """500, 500, then 200: three requests seen, one notification, the audit line says attempts 3."""
    ctx, r = _ctx(tmp_path), _receiver(receivers, [(500, {}), (500, {})])
    out = deliver_alerts(ctx, MODEL, _webhook(r), [_bias()], {"bias"}, now=T0, **FAST)
    assert (out["status"], out["attempts"], out["sent"], out["outbox"]) == ("delivered", 3, 1, 0)
    assert len(r.seen) == 3 and r.bodies()[0] == r.bodies()[2]
    (line,) = _deliveries(ctx)
    assert (line["status"], line["attempts"], line["http_status"]) == ("delivered", 3, 200)
    assert outbox_entries(ctx.workspace) == []


def test_retry_after_is_honoured_and_capped(tmp_path: Path, receivers: list[Receiver]) -> None:
    """A 429's Retry-After is waited for, up to the cap; the base backoff alone would be far shorter."""
    ctx, r = _ctx(tmp_path), _receiver(receivers, [(429, {"Retry-After": "1"})])
    deliver_alerts(ctx, MODEL, _webhook(r), [_bias()], {"bias"}, now=T0, **FAST)
    assert len(r.seen) == 2 and r.seen[1]["at"] - r.seen[0]["at"] >= 0.95
    capped = _receiver(receivers, [(503, {"Retry-After": "3600"})])
    started = time.monotonic()
    out = deliver_alerts(
        ctx,
        "other",
        _webhook(capped),
        [alert_from_check("other", {"kind": "latency"})],
        {"latency"},
        now=T0,
        retry_after_cap=0.3,
        **FAST,
    )
    assert out["status"] == "delivered" and time.monotonic() - started < 5
    assert capped.seen[1]["at"] - capped.seen[0]["at"] >= 0.29


def test_a_receiver_that_always_fails_leaves_the_alert_in_the_outbox_and_it_is_tried_again(
    tmp_path: Path, receivers: list[Receiver]
) -> None:
    """After alert_attempts tries the notification goes to the outbox with the reason; the alert is not marked
    sent, so the next call sends it."""
    ctx = _ctx(tmp_path, policy=_policy(tmp_path, {"alert_attempts": 3}))
    r = _receiver(receivers, [(503, {})] * 3)
    alert = _bias()
    out = deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=T0, **FAST)
    assert (out["status"], out["sent"], out["attempts"], out["outbox"]) == ("failed", 0, 3, 1)
    assert len(r.seen) == 3
    (entry,) = outbox_entries(ctx.workspace)
    assert entry["reason"] == "the receiver answered HTTP 503 (after 3 attempt(s))"
    assert (entry["model"], entry["status"], entry["fingerprints"], entry["owner"]) == (
        MODEL,
        "failed",
        [alert.fingerprint],
        "alice",
    )
    assert entry["payload"]["alerts"][0]["annotations"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
    assert (ctx.workspace / "monitoring" / "outbox.jsonl").stat().st_mode & 0o777 == 0o600
    state = json.loads(alerts_state_path(ctx.workspace).read_text("utf-8"))["alerts"][alert.fingerprint]
    assert (state["last_sent"], state["sends"]) == (None, 0)
    (line,) = _deliveries(ctx)
    assert (line["status"], line["attempts"], line["http_status"]) == ("failed", 3, 503)
    # the receiver is back: a minute later the alert goes out (no repeat interval to wait for)
    out = deliver_alerts(ctx, MODEL, _webhook(r), [alert], {"bias"}, now=T0 + timedelta(minutes=1), **FAST)
    assert (out["status"], out["sent"]) == ("delivered", 1) and len(r.seen) == 4


def test_a_refused_connection_is_tried_again_then_goes_to_the_outbox(tmp_path: Path) -> None:
    """Nothing listens on the port: connection errors are retried, then the outbox names the error."""
    ctx = _ctx(tmp_path, policy=_policy(tmp_path, {"alert_attempts": 2}))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = deliver_alerts(
        ctx, MODEL, Route(route=f"webhook:http://127.0.0.1:{port}/x"), [_bias()], {"bias"}, now=T0, **FAST
    )
    assert (out["status"], out["attempts"]) == ("failed", 2)
    assert "ConnectError" in outbox_entries(ctx.workspace)[0]["reason"]


# --- routes that do not reach a webhook -------------------------------------------------------


def test_no_route_and_log_go_to_the_outbox_once(tmp_path: Path) -> None:
    """Without a route (or with log) the outbox is where alerts go: written once, not again within the interval."""
    ctx = _ctx(tmp_path)
    out = deliver_alerts(ctx, MODEL, Route(), [_bias()], {"bias"}, now=T0)
    assert (out["status"], out["outbox"], out["sent"], out["attempts"]) == ("outbox", 1, 1, 0)
    (entry,) = outbox_entries(ctx.workspace)
    assert entry["reason"].startswith("no alert route: name one in the spec's monitoring.alert")
    assert entry["route"] is None and entry["summaries"] == [_bias().summary]
    assert deliver_alerts(ctx, MODEL, Route(), [_bias()], {"bias"}, now=T0 + timedelta(minutes=1))["suppressed"] == 1
    assert len(outbox_entries(ctx.workspace)) == 1
    out = deliver_alerts(
        ctx,
        "other",
        Route(owner="ops", route="log", source="default"),
        [alert_from_check("other", {"kind": "latency"})],
        {"latency"},
        now=T0,
    )
    assert out["status"] == "outbox" and outbox_entries(ctx.workspace)[1]["reason"].startswith("the route is log")
    assert [x["status"] for x in _deliveries(ctx)] == ["outbox", "outbox"]


def test_a_webhook_off_the_egress_list_goes_to_the_outbox_without_a_connection(tmp_path: Path) -> None:
    """The egress allow-list refuses the host before anything is opened; the outbox names the refusal. With the
    host on the list (MLOPS_EGRESS_ALLOW) the same route is sent."""
    opened: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        opened.append(request)
        return httpx.Response(200)

    transport = httpx.MockTransport(record)
    route = Route(owner="alice", route="webhook:https://hooks.example.com/services/income", source="spec")
    ctx = _ctx(tmp_path)
    out = deliver_alerts(ctx, MODEL, route, [_bias()], {"bias"}, now=T0, transport=transport, **FAST)
    assert (out["status"], out["attempts"], out["outbox"]) == ("failed", 0, 1)
    assert opened == []
    reason = outbox_entries(ctx.workspace)[0]["reason"]
    assert "'hooks.example.com' is not on the egress allow-list" in reason and "MLOPS_EGRESS_ALLOW" in reason
    allowed = _ctx(tmp_path / "b", egress_allow=("hooks.example.com",))
    out = deliver_alerts(allowed, MODEL, route, [_bias()], {"bias"}, now=T0, transport=transport, **FAST)
    assert out["status"] == "delivered" and [str(q.url) for q in opened] == [
        "https://hooks.example.com/services/income"
    ]


def test_slack_route_posts_a_slack_payload_to_the_configured_webhook(tmp_path: Path, receivers: list[Receiver]) -> None:
    """slack:#CHANNEL posts text, blocks and channel to MLOPS_SLACK_WEBHOOK_URL; without it, the outbox says so."""
    r = _receiver(receivers)
    ctx = _ctx(tmp_path, slack_webhook_url=r.url)
    route = Route(owner="alice", route="slack:#income-oncall", source="spec")
    out = deliver_alerts(ctx, MODEL, route, [_bias(), _latency()], {"bias", "latency"}, now=T0, **FAST)
    assert out["status"] == "delivered"
    (body,) = r.bodies()
    assert set(body) == {"channel", "text", "blocks"}
    assert body["channel"] == "#income-oncall"
    assert body["text"].startswith(f"[FIRING:2] {MODEL} (owner alice)")
    assert _bias().summary in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "section", "context"]
    assert body["blocks"][0]["text"]["type"] == "plain_text"
    section = body["blocks"][1]["text"]
    assert section["type"] == "mrkdwn" and f"*Rollback:* `mlops-supervisor rollback {MODEL}`" in section["text"]
    assert _bias().fingerprint in body["blocks"][3]["elements"][0]["text"]
    # resolved
    deliver_alerts(ctx, MODEL, route, [], {"bias", "latency"}, now=T0 + timedelta(minutes=1), **FAST)
    assert r.bodies()[1]["text"].startswith(f"[RESOLVED:2] {MODEL}")
    # no Slack URL configured: nothing is sent, the outbox says what to set
    bare = _ctx(tmp_path / "bare")
    out = deliver_alerts(bare, MODEL, route, [_bias()], {"bias"}, now=T0, **FAST)
    assert (out["status"], out["outbox"], len(r.seen)) == ("failed", 1, 2)
    entry = outbox_entries(bare.workspace)[0]
    assert (
        entry["reason"] == "route slack:#income-oncall needs a Slack incoming-webhook URL: set MLOPS_SLACK_WEBHOOK_URL"
    )
    assert entry["format"] == "slack" and entry["payload"]["channel"] == "#income-oncall"


def test_webhook_payload_is_alertmanagers(tmp_path: Path, receivers: list[Receiver]) -> None:
    """The fields of Alertmanager's webhook payload (version 4): group fields, and per alert status, labels,
    annotations, startsAt, endsAt, generatorURL and fingerprint; the runbook travels in the annotations."""
    ctx, r = _ctx(tmp_path), _receiver(receivers)
    bias, latency = _bias(), _latency()
    deliver_alerts(ctx, MODEL, _webhook(r), [bias, latency], {"bias", "latency"}, now=T0, **FAST)
    (body,) = r.bodies()
    assert set(body) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert (body["version"], body["status"], body["receiver"], body["truncatedAlerts"]) == (
        "4",
        "firing",
        f"mlops-{MODEL}",
        0,
    )
    assert body["groupLabels"] == {"model": MODEL}
    assert body["groupKey"] == '{}:{model="income"}'
    assert body["commonLabels"] == {"model": MODEL, "version": "3", "severity": "warning", "owner": "alice"}
    assert set(body["commonAnnotations"]) == {"runbook_mitigate", "rollback"}
    first = body["alerts"][0]
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert first["labels"] == {
        "alertname": "MlopsBias",
        "kind": "bias",
        "model": MODEL,
        "version": "3",
        "severity": "warning",
        "owner": "alice",
        "subject": "sex/demographic_parity_difference",
    }
    assert first["annotations"]["summary"] == bias.summary
    assert first["annotations"]["runbook_verify"] == bias.runbook["verify"]
    assert first["annotations"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
    assert json.loads(first["annotations"]["details"]) == {"feature": "sex", "metric": "demographic_parity_difference"}
    assert (first["status"], first["endsAt"], first["fingerprint"]) == (
        "firing",
        "0001-01-01T00:00:00Z",
        bias.fingerprint,
    )
    assert datetime.fromisoformat(first["startsAt"].replace("Z", "+00:00")) == T0
    assert body["alerts"][1]["labels"]["alertname"] == "MlopsLatency"
    assert all(isinstance(v, str) for a in body["alerts"] for v in a["labels"].values())


# --- redaction --------------------------------------------------------------------------------


def _leaky() -> Alert:
    return alert_from_check(
        MODEL,
        {
            "kind": "quality_decay",
            "version": 3,
            "metric": "accuracy",
            "message": f"accuracy fell; ask {EMAIL} (token {TOKEN})",
            "note": f"from {EMAIL}",
        },
    )


def _assert_clean(*texts: str) -> None:
    for text in texts:
        assert EMAIL not in text and TOKEN not in text
        assert "<EMAIL_ADDRESS>" in text


@pytest.fixture(scope="module")
def presidio() -> Redactor:
    from mlops_supervisor.policies.pii import PresidioRedactor

    return PresidioRedactor()


@pytest.mark.parametrize("which", ["pattern", "presidio"])
def test_secrets_and_addresses_are_redacted_in_payload_outbox_audit_and_state(
    tmp_path: Path, receivers: list[Receiver], which: str, request: pytest.FixtureRequest
) -> None:
    """An e-mail address and a token in an alert's text reach neither the receiver, nor the outbox, the audit
    log or the dedup state; the payload's structure survives the redactor."""
    redactor = PatternRedactor() if which == "pattern" else request.getfixturevalue("presidio")
    ctx, r = _ctx(tmp_path, redactor=redactor), _receiver(receivers)
    deliver_alerts(ctx, MODEL, _webhook(r, owner=EMAIL), [_leaky()], {"quality_decay"}, now=T0, **FAST)
    (seen,) = r.seen
    _assert_clean(seen["body"])
    body = json.loads(seen["body"])
    assert body["alerts"][0]["fingerprint"] == _leaky().fingerprint
    assert body["alerts"][0]["labels"]["owner"] == "<EMAIL_ADDRESS>"
    assert body["alerts"][0]["startsAt"] == "2025-06-01T12:00:00.000Z"
    assert body["alerts"][0]["annotations"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
    failing = _receiver(receivers, [(500, {})] * 4)
    deliver_alerts(
        ctx,
        "other",
        _webhook(failing, owner=EMAIL),
        [_leaky().model_copy(update={"model": "other"})],
        {"quality_decay"},
        now=T0,
        **FAST,
    )
    _assert_clean(
        (ctx.workspace / "monitoring" / "outbox.jsonl").read_text("utf-8"),
        (ctx.workspace / "audit.jsonl").read_text("utf-8"),
        alerts_state_path(ctx.workspace).read_text("utf-8"),
    )
    assert outbox_entries(ctx.workspace)[0]["owner"] == "<EMAIL_ADDRESS>"
    # the stored (redacted) alert still resolves under its own fingerprint
    out = deliver_alerts(ctx, MODEL, _webhook(r), [], {"quality_decay"}, now=T0 + timedelta(minutes=1), **FAST)
    assert out["resolved_fingerprints"] == [_leaky().fingerprint]
    _assert_clean(r.seen[1]["body"])


# --- status -----------------------------------------------------------------------------------


def test_status_shows_the_outbox(cli: CliRun, workspace: Path) -> None:
    """`status` shows how many notifications wait in the outbox and the latest of them."""
    empty = json.loads(cli("status", "--json").stdout)
    assert empty["outbox"]["count"] == 0
    ctx = _ctx(workspace.parent)
    assert ctx.workspace == workspace
    deliver_alerts(ctx, MODEL, Route(), [_bias()], {"bias"}, now=T0)
    deliver_alerts(
        ctx,
        "other",
        Route(owner="ops", route="log"),
        [alert_from_check("other", {"kind": "latency"})],
        {"latency"},
        now=T0 + timedelta(minutes=1),
    )
    payload = json.loads(cli("status", "--json").stdout)
    assert payload["outbox"]["count"] == 2
    assert [e["model"] for e in payload["outbox"]["latest"]] == ["other", MODEL]  # newest first
    assert payload["outbox"]["latest"][1]["summaries"] == [_bias().summary]
    assert "2 alert notification(s) in the outbox" in payload["report"]["summary"]
    text = cli("status").stdout
    assert "Alert outbox: 2 notification(s)" in text
    assert "no alert route" in text and "the route is log" in text


# --- webhook URLs are secrets: shown as scheme and host only -------------------------------------

SLACK_URL = "https://hooks.slack.com/services/T0ABCDEFG/B0HIJKLMN/aBcDeFgHiJkLmNoPqRsTuVwX"
HOOK_SECRET = "s3cr3t-T0k3n-in-the-path-9f8e7d6c"
SECRET_PIECES = (
    HOOK_SECRET,
    "T0ABCDEFG",
    "B0HIJKLMN",
    "aBcDeFgHiJkLmNoPqRsTuVwX",
    "q-T0k3n",
    "pw-S3cret",
    "/services/",
)


def _written(ctx: ToolContext) -> dict[str, str]:
    files = {
        "audit": ctx.workspace / "audit.jsonl",
        "outbox": ctx.workspace / "monitoring" / "outbox.jsonl",
        "state": alerts_state_path(ctx.workspace),
    }
    return {name: path.read_text("utf-8") for name, path in files.items() if path.exists()}


def test_a_webhook_or_slack_url_is_never_shown_beyond_its_host(tmp_path: Path, receivers: list[Receiver]) -> None:
    """A webhook route's path, query and user, and the Slack incoming-webhook URL, reach neither the result, the
    outbox, the audit log nor the dedup state, whatever happens to the delivery: delivered, failed, refused by
    the egress allow-list, connection refused. The redactor here knows neither shape: the route is cut to its
    scheme and host before anything is written, and every reason names the host only."""
    ctx = _ctx(tmp_path, policy=_policy(tmp_path, {"alert_attempts": 2}), slack_webhook_url=SLACK_URL)
    ok, failing = _receiver(receivers), _receiver(receivers, [(500, {})] * 2)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    port = ok.url.split(":")[2].split("/")[0]
    routes = {
        "delivered": (f"webhook:{ok.url}/{HOOK_SECRET}?token=q-T0k3n", "delivered"),
        "failed": (f"webhook:{failing.url}/{HOOK_SECRET}", "failed"),
        "user": (f"webhook:http://bob:pw-S3cret@127.0.0.1:{port}/hook", "delivered"),
        "refused": (f"webhook:http://127.0.0.1:{closed}/{HOOK_SECRET}", "failed"),
        "off-list": (f"webhook:https://hooks.example.com/{HOOK_SECRET}", "failed"),
        "slack": ("slack:#income-oncall", "failed"),  # hooks.slack.com is not on the egress list
    }
    results = {}
    for i, (name, (route, expected)) in enumerate(routes.items()):
        model = f"m{i}"
        alert = alert_from_check(model, {"kind": "latency", "version": 1, "message": "slow"})
        out = deliver_alerts(ctx, model, Route(owner="alice", route=route), [alert], {"latency"}, now=T0, **FAST)
        assert out["status"] == expected, (name, out)
        results[name] = out
    assert len(ok.seen) == 2 and ok.seen[0]["path"] == f"/hook/{HOOK_SECRET}?token=q-T0k3n"  # sent where asked
    shown = {name: out["route"] for name, out in results.items()}
    assert shown == {
        "delivered": f"webhook:http://127.0.0.1:{port}",
        "failed": f"webhook:{failing.url.rsplit('/', 1)[0]}",
        "user": f"webhook:http://127.0.0.1:{port}",
        "refused": f"webhook:http://127.0.0.1:{closed}",
        "off-list": "webhook:https://hooks.example.com",
        "slack": "slack:#income-oncall",
    }
    reasons = {e["route"]: e["reason"] for e in outbox_entries(ctx.workspace)}
    assert reasons["webhook:https://hooks.example.com"] == (
        "refused a connection to https://hooks.example.com: host 'hooks.example.com' is not on the egress "
        "allow-list; if it should be reachable, add it to MLOPS_EGRESS_ALLOW"
    )
    assert "'hooks.slack.com' is not on the egress allow-list" in reasons["slack:#income-oncall"]
    assert reasons[f"webhook:http://127.0.0.1:{closed}"].startswith(
        f"ConnectError posting to http://127.0.0.1:{closed}"
    )
    assert [r["route"] for r in _deliveries(ctx)] == list(shown.values())
    # the Slack webhook on the list, answering 500: the outbox still shows no more than its host
    slack_ctx = _ctx(tmp_path / "s", slack_webhook_url=SLACK_URL, egress_allow=("hooks.slack.com",))
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    slack = deliver_alerts(
        slack_ctx,
        MODEL,
        Route(route="slack:#income-oncall"),
        [_bias()],
        {"bias"},
        now=T0,
        transport=transport,
        **FAST,
    )
    assert (slack["status"], slack["attempts"]) == ("failed", 4)
    for text in [json.dumps(results), json.dumps(slack), *_written(ctx).values(), *_written(slack_ctx).values()]:
        for piece in SECRET_PIECES:
            assert piece not in text
        assert "hooks.slack.com/services" not in text


def test_the_presidio_redactor_takes_a_slack_webhook_url_for_a_secret(presidio: Redactor) -> None:
    """The redactor every workspace uses catches the Slack incoming-webhook URL wherever it is quoted."""
    text = presidio.redact_text(f"posting to {SLACK_URL} failed")
    assert "T0ABCDEFG" not in text and "aBcDeFgHiJkLmNoPqRsTuVwX" not in text and "<SECRET>" in text


# --- a route that is not a URL ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "why"),
    [
        ("webhook:http://[::1", "its URL does not parse"),
        ("webhook:https://hooks.example.com:99999/x", "its URL does not parse"),
        ("webhook:ftp://hooks.example.com/x", "the URL needs http or https and a host"),
        ("webhook:/alerts", "the URL needs http or https and a host"),
        ("webhook:https://", "the URL needs http or https and a host"),
    ],
)
def test_a_webhook_route_that_is_not_an_http_url_is_refused_where_it_is_written(
    tmp_path: Path, route: str, why: str
) -> None:
    """The spec's monitoring.alert and the policy's routes hold a webhook to an http(s) URL with a host."""
    from pydantic import ValidationError

    from mlops_supervisor.policies import PolicyFileError
    from mlops_supervisor.policies.policy import check_alert_route

    with pytest.raises(ValueError, match=r"is not one of: log, email:ADDRESS") as caught:
        check_alert_route(route)
    assert repr(route) in str(caught.value) and why in str(caught.value)
    with pytest.raises(ValidationError, match=why):
        MonitoringSpec(owner="alice", alert=route)
    with pytest.raises(PolicyFileError, match=why):
        _policy(tmp_path, {"routes": {MODEL: {"owner": "alice", "alert": route}}})
    assert check_alert_route("webhook:http://127.0.0.1:8080/alerts") == "webhook:http://127.0.0.1:8080/alerts"


@pytest.mark.parametrize("route", ["webhook:http://[::1", "webhook:http://[::1/x", "webhook:ftp://hooks/x"])
def test_a_malformed_webhook_that_got_through_goes_to_the_outbox_with_its_reason(tmp_path: Path, route: str) -> None:
    """A route made without the checks (an old state, a direct call) never escapes delivery: the notification
    goes to the outbox with the reason, the audit log has its line, and the alert is tried again next time."""
    ctx = _ctx(tmp_path)
    out = deliver_alerts(ctx, MODEL, Route(owner="alice", route=route), [_bias()], {"bias"}, now=T0, **FAST)
    assert (out["status"], out["sent"], out["outbox"]) == ("failed", 0, 1)
    (entry,) = outbox_entries(ctx.workspace)
    assert entry["reason"] and entry["fingerprints"] == [_bias().fingerprint]
    (line,) = _deliveries(ctx)
    assert line["status"] == "failed" and line["reason"] == entry["reason"]
    again = deliver_alerts(ctx, MODEL, Route(owner="alice", route=route), [_bias()], {"bias"}, now=T0, **FAST)
    assert again["status"] == "failed" and again["suppressed"] == 0  # not marked sent: tried again


# --- judged piece by piece ----------------------------------------------------------------------


def test_only_the_pieces_that_were_judged_resolve(tmp_path: Path, receivers: list[Receiver]) -> None:
    """With ``judged``, a firing alert resolves only when its own version, feature or metric was judged again:
    bias by race was not (too few labels with race), latency of version 4 was not (no traffic in the window);
    they stay firing until a later pass judges them, and resolve then, once."""
    ctx, r = _ctx(tmp_path), _receiver(receivers)

    def bias(feature: str) -> Alert:
        return alert_from_check(
            MODEL, {"kind": "bias", "version": 3, "feature": feature, "metric": "demographic_parity_difference"}
        )

    def latency(version: int) -> Alert:
        return alert_from_check(MODEL, {"kind": "latency", "version": version, "message": f"v{version} slow"})

    firing = [bias("sex"), bias("race"), latency(3), latency(4)]
    deliver_alerts(ctx, MODEL, _webhook(r), firing, {"bias", "latency"}, now=T0, **FAST)
    asked: list[tuple[str, int | None, str]] = []

    def partly(kind: str, version: int | None, subject: str) -> bool:
        asked.append((kind, version, subject))
        return (kind, version, subject) in {
            ("bias", 3, "sex/demographic_parity_difference"),
            ("latency", 3, ""),
        }

    out = deliver_alerts(ctx, MODEL, _webhook(r), [], {"bias", "latency"}, judged=partly, now=T0, **FAST)
    assert sorted(out["resolved_fingerprints"]) == sorted([bias("sex").fingerprint, latency(3).fingerprint])
    assert sorted(asked) == sorted(
        [
            ("bias", 3, "sex/demographic_parity_difference"),
            ("bias", 3, "race/demographic_parity_difference"),
            ("latency", 3, ""),
            ("latency", 4, ""),
        ]
    )
    state = json.loads(alerts_state_path(ctx.workspace).read_text("utf-8"))["alerts"]
    assert {fp: e["status"] for fp, e in state.items()} == {
        bias("sex").fingerprint: "resolved",
        bias("race").fingerprint: "firing",
        latency(3).fingerprint: "resolved",
        latency(4).fingerprint: "firing",
    }
    # judged, the rest resolve, once; what resolved already is not sent again
    everything = deliver_alerts(
        ctx, MODEL, _webhook(r), [], set(), judged=lambda *_: True, now=T0 + timedelta(minutes=1), **FAST
    )
    assert sorted(everything["resolved_fingerprints"]) == sorted([bias("race").fingerprint, latency(4).fingerprint])
    quiet = deliver_alerts(
        ctx, MODEL, _webhook(r), [], set(), judged=lambda *_: True, now=T0 + timedelta(minutes=2), **FAST
    )
    assert quiet["status"] == "nothing" and len(r.seen) == 3
    assert [[a["status"] for a in b["alerts"]] for b in r.bodies()] == [
        ["firing"] * 4,
        ["resolved"] * 2,
        ["resolved"] * 2,
    ]
