"""Prometheus rules and the Alertmanager route rendered from a spec, checked by promtool and amtool themselves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import load_policy
from mlops_supervisor.tools import PipelineSpec, load_spec
from mlops_supervisor.tools.monitoring import alertmanager_config, prometheus_rules, render_alert_files
from tests.conftest import EXAMPLE_SPEC, CliRun

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; `make system-deps`)"
)
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not installed (Debian package prometheus-alertmanager; `make system-deps`)"
)
MODEL = "adult-income-classifier"


def _spec(**monitoring: Any) -> PipelineSpec:
    spec = load_spec(EXAMPLE_SPEC).spec
    return spec.model_copy(update={"monitoring": spec.monitoring.model_copy(update=monitoring)})


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text, "utf-8")
    return tmp_path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
@needs_amtool
@pytest.mark.parametrize(
    "alert",
    ["webhook:https://hooks.example.com/income", "slack:#income-oncall", "email:ml-oncall@example.com", "log", None],
)
def test_rendered_files_pass_promtool_and_amtool(tmp_path: Path, alert: str | None) -> None:
    """Every route kind renders files that promtool and amtool accept, routed by the model label."""
    files = render_alert_files(_spec(owner="alice", alert=alert), load_policy(None), target="localhost:8000")
    out = _write(tmp_path, files)
    rules = _run(str(PROMTOOL), "check", "rules", str(out / "prometheus-rules.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 2 rules found" in rules.stdout
    am = _run(str(AMTOOL), "check-config", str(out / "alertmanager.yml"))
    assert am.returncode == 0, am.stdout + am.stderr
    # the scrape snippet is valid inside a whole Prometheus configuration that loads the rules
    whole = yaml.safe_load(files["prometheus-scrape.yml"]) | {"rule_files": ["prometheus-rules.yml"]}
    (out / "prometheus.yml").write_text(yaml.safe_dump(whole), "utf-8")
    config = _run(str(PROMTOOL), "check", "config", str(out / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_route_follows_the_owner_and_the_kind_of_destination() -> None:
    """webhook_configs, slack_configs (the URL from a file, never in it) or email_configs for the model's route."""
    policy = load_policy(None)
    hook = alertmanager_config(_spec(owner="alice", alert="webhook:https://hooks.example.com/income"), policy)
    (receiver,) = [r for r in hook["receivers"] if r["name"] == f"mlops-{MODEL}"]
    assert receiver["webhook_configs"] == [{"url": "https://hooks.example.com/income", "send_resolved": True}]
    assert hook["route"]["routes"] == [{"receiver": f"mlops-{MODEL}", "matchers": [f'model="{MODEL}"']}]
    assert hook["route"]["repeat_interval"] == "14400s"  # the policy's 240 minutes
    slack = alertmanager_config(_spec(alert="slack:#income-oncall"), policy)
    (cfg,) = slack["receivers"][1]["slack_configs"]
    assert cfg["channel"] == "#income-oncall" and cfg["api_url_file"] and "api_url" not in cfg
    mail = alertmanager_config(_spec(alert="email:ml-oncall@example.com"), policy)
    assert mail["receivers"][1]["email_configs"][0]["to"] == "ml-oncall@example.com"
    rules = prometheus_rules(_spec(owner="alice"), policy)["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == ["MlopsErrorRate", "MlopsLatency"]
    assert rules[0]["labels"] == {"severity": "critical", "kind": "error_rate", "model": MODEL, "owner": "alice"}
    assert rules[0]["annotations"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
    assert "> 0.25" in rules[1]["expr"]  # 250 ms, the policy's p99 limit
    only_latency = prometheus_rules(_spec(watch=("latency", "drift")), policy)["groups"][0]["rules"]
    assert [r["alert"] for r in only_latency] == ["MlopsLatency"]


@needs_promtool
def test_error_rate_rule_fires_above_the_limit_and_not_below(tmp_path: Path) -> None:
    """`promtool test rules`: version 3 errs on 10% of requests (limit 5%) and fires after 5 minutes;
    version 4 errs on 1% and never does."""
    files = render_alert_files(_spec(owner="alice"), load_policy(None), target="localhost:8000")
    out = _write(tmp_path, files)
    rules = yaml.safe_load(files["prometheus-rules.yml"])["groups"][0]["rules"]
    notes = rules[0]["annotations"]
    series = {("3", "200"): "0+90x30", ("3", "500"): "0+10x30", ("4", "200"): "0+99x30", ("4", "500"): "0+1x30"}
    expected = {
        "exp_labels": {"severity": "critical", "kind": "error_rate", "model": MODEL, "owner": "alice", "version": "3"},
        "exp_annotations": {
            "summary": f"{MODEL} version 3 errors on 10% of requests (limit 5.00%)",
            "runbook_verify": notes["runbook_verify"],
            "runbook_mitigate": notes["runbook_mitigate"],
            "rollback": f"mlops-supervisor rollback {MODEL}",
        },
    }
    unit = {
        "rule_files": ["prometheus-rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'mlops_requests_total{{model="{MODEL}",version="{v}",status="{s}"}}', "values": values}
                    for (v, s), values in series.items()
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "MlopsErrorRate", "exp_alerts": []},  # pending, not firing yet
                    {"eval_time": "15m", "alertname": "MlopsErrorRate", "exp_alerts": [expected]},
                ],
            }
        ],
    }
    (out / "unit.yml").write_text(yaml.safe_dump(unit), "utf-8")
    done = _run(str(PROMTOOL), "test", "rules", str(out / "unit.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    # and the test can fail: expecting version 4 too is refused
    unit["tests"][0]["alert_rule_test"][1]["exp_alerts"].append(
        {**expected, "exp_labels": {**expected["exp_labels"], "version": "4"}}
    )
    (out / "unit.yml").write_text(yaml.safe_dump(unit), "utf-8")
    assert _run(str(PROMTOOL), "test", "rules", str(out / "unit.yml")).returncode != 0


def _spec_file(tmp_path: Path, name: str = "spec.yaml", **monitoring: Any) -> Path:
    doc = yaml.safe_load(EXAMPLE_SPEC.read_text("utf-8"))
    doc["monitoring"].update(monitoring)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), "utf-8")
    return path


def test_cli_writes_the_three_files(cli: CliRun, tmp_path: Path) -> None:
    """`alert-rules SPEC --out DIR` writes prometheus-rules.yml, alertmanager.yml and prometheus-scrape.yml."""
    spec = _spec_file(tmp_path, owner="alice", alert="webhook:https://hooks.example.com/income")
    out = tmp_path / "alerting"
    done = cli("alert-rules", str(spec), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "alertmanager.yml",
        "prometheus-rules.yml",
        "prometheus-scrape.yml",
    ]
    assert (result["model"], result["route"], result["route_source"], result["target"]) == (
        MODEL,
        "webhook",
        "spec",
        "localhost:8000",
    )
    if PROMTOOL and AMTOOL:
        assert result["checks"] == {
            "prometheus-rules.yml": "ok (promtool check rules)",
            "alertmanager.yml": "ok (amtool check-config)",
        }
    am = yaml.safe_load((out / "alertmanager.yml").read_text("utf-8"))
    assert am["receivers"][1]["webhook_configs"][0]["url"] == "https://hooks.example.com/income"
    scrape = yaml.safe_load((out / "prometheus-scrape.yml").read_text("utf-8"))
    assert scrape["scrape_configs"][0]["static_configs"] == [
        {"targets": ["localhost:8000"], "labels": {"model": MODEL}}
    ]
    text = cli("alert-rules", str(spec), "--out", str(out), "--target", "router.internal:9000")
    assert text.returncode == 0 and f"wrote {out / 'prometheus-rules.yml'}" in text.stdout
    assert "router.internal:9000" in (out / "prometheus-scrape.yml").read_text("utf-8")


def test_cli_refuses_a_bad_spec_or_out_and_writes_nothing(cli: CliRun, tmp_path: Path) -> None:
    """A spec that does not validate, a bad --target or an --out that is a file: exit 2, one message, nothing written."""
    bad = _spec_file(tmp_path, alert="pager:oncall")
    out = tmp_path / "alerting"
    done = cli("alert-rules", str(bad), "--out", str(out))
    assert done.returncode == 2
    assert "alert route 'pager:oncall' is not one of: log, email:ADDRESS, slack:#CHANNEL" in done.stderr
    assert not out.exists()
    good = _spec_file(tmp_path, "good.yaml")
    done = cli("alert-rules", str(good), "--out", str(out), "--target", "not a target")
    assert done.returncode == 2 and "--target 'not a target' is not HOST:PORT" in done.stderr
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("x", "utf-8")
    done = cli("alert-rules", str(good), "--out", str(blocker))
    assert done.returncode == 2 and f"--out {blocker} exists and is not a directory" in done.stderr
    assert blocker.read_text("utf-8") == "x"
