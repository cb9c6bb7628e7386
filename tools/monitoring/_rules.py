"""The scaled-out form of the alerts: Prometheus alerting rules and an Alertmanager route, rendered from the spec.

Where Prometheus scrapes the router and Alertmanager routes its alerts, the same limits as
``service_metrics`` apply there: ``prometheus_rules`` holds the error rate and the p99
latency of each version against the policy's ``monitoring`` limits, over the router's
``mlops_requests_total`` and ``mlops_request_latency_seconds_bucket``, selected by the
``model`` label the scrape configuration (``scrape_config``) adds. ``alertmanager_config``
routes ``model=<name>`` to a receiver for the owner, found as ``resolve_route`` finds it:
``webhook_configs`` for ``webhook:``, ``slack_configs`` for ``slack:``, ``email_configs`` for
``email:``. The alert names, labels and annotations are those of ``deliver_alerts``'s webhook
payloads, so a receiver handles both alike. ``render_alert_files`` gives the three files as text.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlops_supervisor.policies import InvalidInputError, Policy, RunError
from mlops_supervisor.tools._spec import LoadedSpec, PipelineSpec
from mlops_supervisor.tools.core import write_atomic
from mlops_supervisor.tools.monitoring._alerting import alert_name, receiver_name, resolve_route
from mlops_supervisor.tools.monitoring._alerts import runbook

__all__ = [
    "ALERT_FILES",
    "SLACK_URL_FILE",
    "alertmanager_config",
    "prometheus_rules",
    "render_alert_files",
    "scrape_config",
    "write_alert_files",
]

ALERT_FILES = ("prometheus-rules.yml", "alertmanager.yml", "prometheus-scrape.yml")
"""The files ``mlops-supervisor alert-rules`` writes, in this order."""

SLACK_URL_FILE = "/etc/alertmanager/slack_webhook_url"
"""Where the Alertmanager configuration reads the Slack incoming-webhook URL (a secret, never in the file)."""

_WINDOW = "5m"
_NULL_RECEIVER = "mlops-null"


def _duration(seconds: float) -> str:
    """A Prometheus duration of whole seconds (at least one)."""
    return f"{max(1, round(seconds))}s"


def _quote(value: str) -> str:
    """``value`` as a PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _watched(spec: PipelineSpec) -> set[str]:
    watch: set[str] = set(spec.monitoring.watch)
    return watch or {"errors", "latency"}


def prometheus_rules(spec: PipelineSpec, policy: Policy) -> dict[str, Any]:
    """Alerting rules for the model's router: error rate and p99 latency per version against the policy's limits.

    Only what the spec's ``monitoring.watch`` names (``errors``, ``latency``; both when it names
    nothing); drift, live quality and bias are checks of ``mlops-supervisor monitor``, not of Prometheus.
    """
    model = spec.model.name
    limits = policy.monitoring
    owner = resolve_route(policy, model, spec.monitoring).owner
    selector = f"model={_quote(model)}"
    labels = {"model": model, **({"owner": owner} if owner else {})}
    rules: list[dict[str, Any]] = []
    watched = _watched(spec)
    if "errors" in watched:
        book = runbook(model, "error rate")
        rules.append(
            {
                "alert": alert_name("error_rate"),
                "expr": (
                    f'sum by (model, version) (rate(mlops_requests_total{{{selector},status=~"5.."}}[{_WINDOW}]))\n'
                    f"/\nsum by (model, version) (rate(mlops_requests_total{{{selector}}}[{_WINDOW}]))\n"
                    f"> {limits.max_error_rate:g}"
                ),
                "for": _WINDOW,
                "labels": {"severity": "critical", "kind": "error_rate", **labels},
                "annotations": {
                    "summary": f"{model} version {{{{ $labels.version }}}} errors on {{{{ $value | humanizePercentage }}}}"
                    f" of requests (limit {limits.max_error_rate:.2%})",
                    "runbook_verify": book["verify"],
                    "runbook_mitigate": book["mitigate"],
                    "rollback": book["rollback"],
                },
            }
        )
    if "latency" in watched:
        book = runbook(model, "latency")
        seconds = limits.max_p99_latency_ms / 1000
        rules.append(
            {
                "alert": alert_name("latency"),
                "expr": (
                    "histogram_quantile(0.99, sum by (model, version, le) "
                    f"(rate(mlops_request_latency_seconds_bucket{{{selector}}}[{_WINDOW}])))\n> {seconds:g}"
                ),
                "for": _WINDOW,
                "labels": {"severity": "warning", "kind": "latency", **labels},
                "annotations": {
                    "summary": f"{model} version {{{{ $labels.version }}}} p99 {{{{ $value | humanizeDuration }}}}"
                    f" (limit {limits.max_p99_latency_ms:g} ms)",
                    "runbook_verify": book["verify"],
                    "runbook_mitigate": book["mitigate"],
                    "rollback": book["rollback"],
                },
            }
        )
    return {"groups": [{"name": f"mlops-{model}", "rules": rules}]}


def alertmanager_config(spec: PipelineSpec, policy: Policy) -> dict[str, Any]:
    """An Alertmanager configuration: alerts with ``model=<name>`` go to a receiver for the model's owner.

    ``webhook:URL`` becomes ``webhook_configs``, ``slack:#CHANNEL`` ``slack_configs`` (the URL read from
    ``SLACK_URL_FILE``), ``email:ADDRESS`` ``email_configs`` (through ``localhost:25``: change
    ``global.smtp_smarthost`` and ``smtp_from`` to your mail relay); ``log`` and no route give a
    receiver that sends nothing (the workspace's outbox is where ``monitor`` puts those alerts).
    """
    model = spec.model.name
    route = resolve_route(policy, model, spec.monitoring)
    receiver: dict[str, Any] = {"name": receiver_name(model)}
    config: dict[str, Any] = {"global": {"resolve_timeout": "5m"}}
    kind, _, target = (route.route or "").partition(":")
    if kind == "webhook":
        receiver["webhook_configs"] = [{"url": target, "send_resolved": True}]
    elif kind == "slack":
        receiver["slack_configs"] = [
            {
                "api_url_file": SLACK_URL_FILE,
                "channel": target,
                "send_resolved": True,
                "title": "[{{ .Status | toUpper }}] {{ .CommonLabels.model }}: {{ .CommonLabels.alertname }}",
                "text": "{{ range .Alerts }}{{ .Annotations.summary }}\nVerify: {{ .Annotations.runbook_verify }}\n"
                "Rollback: `{{ .Annotations.rollback }}`\n{{ end }}",
            }
        ]
    elif kind == "email":
        config["global"].update(smtp_smarthost="localhost:25", smtp_from="alertmanager@localhost")
        receiver["email_configs"] = [{"to": target, "send_resolved": True}]
    config["route"] = {
        "receiver": _NULL_RECEIVER,
        "group_by": ["model"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": _duration(policy.monitoring.repeat_interval_minutes * 60),
        "routes": [{"receiver": receiver_name(model), "matchers": [f"model={_quote(model)}"]}],
    }
    config["receivers"] = [{"name": _NULL_RECEIVER}, receiver]
    return config


def scrape_config(spec: PipelineSpec, target: str) -> dict[str, Any]:
    """A Prometheus ``scrape_configs`` entry for the model's router at ``target`` (``HOST:PORT``), adding the
    ``model`` label the rules select on."""
    model = spec.model.name
    return {
        "scrape_configs": [
            {
                "job_name": f"mlops-router-{model}",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target], "labels": {"model": model}}],
            }
        ]
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, templates) as literal blocks, so the files read as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def _yaml(value: dict[str, Any], header: str) -> str:
    body = yaml.dump(value, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=120)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def render_alert_files(spec: PipelineSpec, policy: Policy, *, target: str, source: str = "") -> dict[str, str]:
    """The three files (``ALERT_FILES``) as YAML text, each with a header saying where it came from."""
    model = spec.model.name
    route = resolve_route(policy, model, spec.monitoring)
    origin = f"Rendered by `mlops-supervisor alert-rules` from {source or 'the spec'} and the policy ({policy.source})."
    where = (
        f"Alerts of {model} go to {route.route} (owner {route.owner or 'not named'}; from the {route.source})."
        if route.route
        else f"{model} has no alert route: the receiver sends nothing until the spec or the policy names one."
    )
    extra = {
        "slack": f"\nThe Slack incoming-webhook URL is read from {SLACK_URL_FILE}.",
        "email": "\nSet global.smtp_smarthost and smtp_from to your mail relay.",
        "log": "\nThe route is log: the receiver sends nothing; `mlops-supervisor monitor` writes the outbox.",
    }.get((route.route or "").partition(":")[0], "")
    return {
        "prometheus-rules.yml": _yaml(
            prometheus_rules(spec, policy),
            f"{origin}\nLoad with rule_files; check with `promtool check rules prometheus-rules.yml`.",
        ),
        "alertmanager.yml": _yaml(
            alertmanager_config(spec, policy),
            f"{origin}\n{where}{extra}\nCheck with `amtool check-config alertmanager.yml`.",
        ),
        "prometheus-scrape.yml": _yaml(
            scrape_config(spec, target),
            f"{origin}\nAdd this entry to scrape_configs of prometheus.yml; the model label is what the rules select.",
        ),
    }


_CHECKS = {"prometheus-rules.yml": ("promtool", "check", "rules"), "alertmanager.yml": ("amtool", "check-config")}


def _validate(files: dict[str, str]) -> dict[str, str]:
    """Run ``promtool check rules`` and ``amtool check-config`` on the rendered files where those programs are
    installed; what each said (``ok`` or why not checked). ``RunError`` when one refuses a file."""
    checked: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mlops-alert-rules-") as tmp:
        for name, command in _CHECKS.items():
            program = shutil.which(command[0])
            if program is None:
                checked[name] = f"not checked: {command[0]} is not installed"
                continue
            path = Path(tmp) / name
            path.write_text(files[name], "utf-8")
            done = subprocess.run(
                [program, *command[1:], str(path)], capture_output=True, text=True, timeout=60, check=False
            )
            if done.returncode != 0:
                said = " ".join((done.stderr or done.stdout).split())
                raise RunError(f"{' '.join(command)} refused the rendered {name}: {said}")
            checked[name] = f"ok ({' '.join(command)})"
    return checked


def write_alert_files(loaded: LoadedSpec, policy: Policy, out: Path, *, target: str) -> dict[str, Any]:
    """Render ``ALERT_FILES`` for ``loaded``, check them with promtool and amtool (where installed), then write
    them into ``out``; nothing is written unless all three rendered and passed.

    Returns ``{status, model, out, files, checks, route, route_source, target}``: ``route`` is the kind of
    destination only (``webhook``, ``slack``, ``email``, ``log`` or ``none``), never its URL or address.
    """
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InvalidInputError("out_not_a_directory", f"--out {out} exists and is not a directory; pass a folder")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in target:
        raise InvalidInputError("target_invalid", f"--target {target!r} is not HOST:PORT (such as localhost:8000)")
    files = render_alert_files(loaded.spec, policy, target=target, source=str(loaded.path))
    checks = _validate(files)
    for name in ALERT_FILES:
        write_atomic(out / name, files[name])
    route = resolve_route(policy, loaded.spec.model.name, loaded.spec.monitoring)
    return {
        "status": "done",
        "model": loaded.spec.model.name,
        "out": str(out),
        "files": [str(out / name) for name in ALERT_FILES],
        "checks": checks,
        "route": (route.route or "none").partition(":")[0],
        "route_source": route.source,
        "target": target,
    }
