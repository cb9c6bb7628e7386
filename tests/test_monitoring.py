"""The Monitor stage end to end: deploy, traffic, delayed labels, `monitor`, alerts routed to the owner's webhook.

One deployment through the real pipeline (a first production deploy approved by carol), real
router and model server processes, feedback through the CLI, and `mlops-supervisor monitor` as
a cron job would run it, against a webhook receiver on loopback that fails twice first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import AuditLog
from mlops_supervisor.testing import KeyRing, WebhookReceiver, install_policy
from tests.conftest import CLI
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"


def _cli(ws: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--workspace", str(ws), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _deploy(ws: Path, tmp_path: Path, keys: KeyRing, hook: str) -> None:
    """Data to a first production deploy of version 1, approved by carol; its spec routes alerts to ``hook``."""
    install_policy(ws, keys.policy(approvers=["carol"], people=["alice"]), admin="carol", keys=keys)
    spec = small_spec(
        tmp_path,
        _adult_slice(),
        data__sensitive_features=["sex"],
        use_case="flag census records above 50K",
        data__sensitivity="internal",
        serving={"target": "local", "latency_p95_ms": 250},
        monitoring={"watch": ["errors", "latency", "quality", "bias"], "owner": "dana", "alert": f"webhook:{hook}"},
    )
    with Supervisor(ws, user="alice") as sup:
        held = sup.run_pipeline(spec, stop_after="deploy")
    assert held.status == "awaiting_approval", held.report.summary
    with Supervisor(ws, user="carol") as sup:
        done = sup.approve(held.thread_id, reason="evidence reviewed")
    assert done.status == "done", done.report.summary


def _traffic(ws: Path) -> pd.DataFrame:
    """The held-out rows sent through the router, five per request; each row with its request id and row number."""
    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet"))).reset_index(drop=True)
    features = [c for c in test.columns if c not in ("class", "sex")]  # sex is a sensitive feature, not an input
    url = json.loads((ws / "serving" / MODEL / "state.json").read_text("utf-8"))["router"]["url"]
    ids, rows = [], []
    with httpx.Client(timeout=10) as client:
        for start in range(0, len(test), 5):
            batch = test.iloc[start : start + 5]
            answer = client.post(
                f"{url}/invocations", json={"dataframe_records": json.loads(batch[features].to_json(orient="records"))}
            )
            assert answer.status_code == 200, answer.text
            ids += [answer.headers["x-request-id"]] * len(batch)
            rows += list(range(len(batch)))
    return test.assign(request_id=ids, row=rows)


def _shifted_feedback(served: pd.DataFrame, path: Path) -> Path:
    """The true outcomes, except that one group's (women's) are the opposite of what they were."""
    flipped = served["class"].where(served["sex"] != "Female", served["class"].map({">50K": "<=50K", "<=50K": ">50K"}))
    feedback = pd.DataFrame(
        {"request_id": served["request_id"], "row": served["row"], "label": flipped, "sex": served["sex"]}
    )
    feedback.to_csv(path, index=False)
    return path


def _alerts(bodies: list[Any]) -> list[dict[str, Any]]:
    """Every alert in the Alertmanager-style notifications received."""
    return [alert for body in bodies for alert in body["alerts"]]


def test_shifted_outcomes_reach_the_owner_once_as_a_bias_and_a_quality_alert(
    workspace: Path, tmp_path: Path, keys: KeyRing
) -> None:
    """Deploy, traffic, feedback where one group's outcomes shift, `monitor`: both alerts reach the webhook once.

    The receiver fails the first two deliveries: the third try gets through. A second `monitor`
    sends nothing new. The audit log records the delivery; the payload names the owner and carries
    the runbook with the exact rollback command. Monitoring changed nothing: version 1 still serves.
    """
    with WebhookReceiver(fail_first=2) as hook:
        _deploy(workspace, tmp_path, keys, hook.url)
        served = _traffic(workspace)
        feedback = _cli(workspace, "feedback", MODEL, str(_shifted_feedback(served, tmp_path / "labels.csv")))
        assert feedback.returncode == 0, feedback.stderr + feedback.stdout

        first = _cli(workspace, "monitor", MODEL, "--json")
        assert first.returncode == 0, first.stderr + first.stdout
        result = json.loads(first.stdout)
        output = next(o["output"] for o in result["outputs"] if o["tool"] == "monitor_model")
        assert [d.status for d in hook.deliveries] == [500, 500, 200]
        received = [(a["labels"]["kind"], a["labels"]["subject"]) for a in _alerts(hook.received)]
        assert {kind for kind, _ in received} == {"bias", "quality_decay"}, received
        assert len(received) == len(set(received)), "each alert reaches the receiver once"
        assert ("bias", "sex/equalized_odds_difference") in received and ("quality_decay", "accuracy") in received
        for alert in _alerts(hook.received):
            assert alert["labels"]["owner"] == "dana" and alert["labels"]["model"] == MODEL
            assert alert["annotations"]["rollback"] == f"mlops-supervisor rollback {MODEL}"
            assert alert["annotations"]["runbook_verify"] and alert["annotations"]["runbook_mitigate"]
        bias = next(a for a in output["alerts"] if a["kind"] == "bias")
        assert bias["subject"].startswith("sex") and bias["details"]["value"] > bias["details"]["limit"]
        assert {p["action"] for p in output["proposals"]} >= {"retrain"}

        second = _cli(workspace, "monitor", MODEL, "--json")
        assert second.returncode == 0, second.stderr
        assert len(hook.deliveries) == 3, "a firing alert already delivered is not sent again within the window"
        again = next(o["output"] for o in json.loads(second.stdout)["outputs"] if o["tool"] == "monitor_model")
        assert again["delivery"]["sent"] == 0 and again["delivery"]["suppressed"] == len(received)

    deliveries = [r for r in AuditLog(workspace / "audit.jsonl").records() if r["event"] == "alert_delivery"]
    delivered = [r for r in deliveries if r["status"] == "delivered"]
    assert len(delivered) == 1 and delivered[0]["attempts"] == 3 and delivered[0]["owner"] == "dana"
    assert sorted(delivered[0]["kinds"]) == ["bias", "quality_decay"]
    state = json.loads((workspace / "serving" / MODEL / "state.json").read_text("utf-8"))
    assert {v: s["weight"] for v, s in state["versions"].items()} == {"1": 100}


def test_monitor_on_a_schedule_stops_cleanly_on_sigterm(workspace: Path) -> None:
    """`monitor --every 1s` with nothing served exits 2 at once; a bad DURATION is named; SIGTERM ends a loop with 0."""
    bad = _cli(workspace, "monitor", "--every", "soon")
    assert bad.returncode == 2 and "'soon'" in bad.stderr and "30s, 5m" in bad.stderr
    nothing = _cli(workspace, "monitor")
    assert nothing.returncode == 2 and "nothing is served" in nothing.stderr
    # a model that is not served: each run is a request refused as invalid input, and the loop goes on
    with subprocess.Popen(
        [CLI, "--workspace", str(workspace), "monitor", "ghost-model", "--every", "1s", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as loop:
        try:
            assert loop.stdout is not None
            first = json.loads(loop.stdout.readline())
            assert first["status"] == "invalid_input" and "ghost-model" in first["report"]["summary"]
            loop.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert loop.wait(timeout=60) == 0
            assert time.monotonic() - started < 30
        finally:
            if loop.poll() is None:
                loop.kill()


@pytest.mark.parametrize("every", ["0", "-1m", "5x"])
def test_a_bad_interval_names_the_value(workspace: Path, every: str) -> None:
    """Anything but a positive duration of at least a second is refused before anything runs."""
    from typer.testing import CliRunner

    from mlops_supervisor._cli import app

    result = CliRunner().invoke(app, ["--workspace", str(workspace), "monitor", "--every", every])
    assert result.exit_code == 2 and repr(every) in result.output
    assert not workspace.exists()
