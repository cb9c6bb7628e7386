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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import AuditLog, InvalidInputError, PatternRedactor, load_policy
from mlops_supervisor.testing import KeyRing, WebhookReceiver, install_policy
from mlops_supervisor.tools.core import ToolContext
from mlops_supervisor.tools.monitoring._monitor import ENDPOINT_DOWN, _serving_version, monitor_model
from tests._zygote import run_cli
from tests.conftest import CLI, store_client
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"


def _cli(ws: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_cli([CLI, "--workspace", str(ws), *args], timeout=timeout)


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


def _change_policy(ws: Path, keys: KeyRing, monitoring: dict[str, Any]) -> None:
    """The deploy's policy with ``monitoring`` rules: proposed by alice and, as it loosens them, approved by carol."""
    change = install_policy(
        ws, keys.policy(approvers=["carol"], people=["alice"], monitoring=monitoring), admin="alice", keys=keys
    )
    assert change["status"] == "proposed", change
    with Supervisor(ws, user="carol") as sup:
        assert sup.approve_policy(change["digest"])["status"] == "installed"


def _monitor_output(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The monitor_model tool's output of one `monitor MODEL --json` run that succeeded."""
    assert done.returncode == 0, done.stderr + done.stdout
    output: dict[str, Any] = next(
        o["output"] for o in json.loads(done.stdout)["outputs"] if o["tool"] == "monitor_model"
    )
    return output


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
        # the remedy is proposed, never run: a retrain (the only running version is the champion: no rollback)
        assert [(p["action"], p["command"].split(" with ")[0]) for p in output["proposals"]] == [
            ("retrain", "mlops-supervisor run SPEC")
        ]

        deliveries = [r for r in AuditLog(workspace / "audit.jsonl").records() if r["event"] == "alert_delivery"]
        delivered = [r for r in deliveries if r["status"] == "delivered"]
        assert len(delivered) == 1 and delivered[0]["attempts"] == 3 and delivered[0]["owner"] == "dana"
        assert sorted(delivered[0]["kinds"]) == ["bias", "quality_decay"]

        # a policy that asks for more labels than there are: nothing is judged, so nothing resolves
        _change_policy(workspace, keys, {"min_labelled": 100_000})
        unjudged = _monitor_output(_cli(workspace, "monitor", MODEL, "--json"))
        assert unjudged["alerts"] == [] and unjudged["delivery"]["status"] == "nothing"
        assert len(hook.deliveries) == 3
        # limits the shift stays within: both alerts resolve, in one notification, once
        loose = {"demographic_parity_difference": 1.0, "equalized_odds_difference": 1.0}
        _change_policy(workspace, keys, {"max_metric_decay": 1.0, "fairness": loose})
        quiet = _monitor_output(_cli(workspace, "monitor", MODEL, "--json"))
        assert quiet["alerts"] == [] and quiet["proposals"] == []
        assert quiet["delivery"]["resolved"] == len(received)
        assert len(hook.deliveries) == 4 and hook.received[-1]["status"] == "resolved"
        assert sorted((a["labels"]["kind"], a["labels"]["subject"]) for a in hook.received[-1]["alerts"]) == sorted(
            received
        )
        still = _monitor_output(_cli(workspace, "monitor", MODEL, "--json"))
        assert still["delivery"]["status"] == "nothing" and len(hook.deliveries) == 4

    resolved = [r for r in AuditLog(workspace / "audit.jsonl").records() if r["event"] == "alert_delivery"][-1]
    assert (resolved["status"], resolved["fingerprints"], len(resolved["resolved"])) == ("delivered", [], len(received))
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


# --- one monitoring pass, in process, on a serving state and a registry written here ---------------

CLASSES = ["<=50K", ">50K"]


@pytest.fixture
def processes() -> Iterator[Callable[[], int]]:
    """Start a stand-in for a server (a process that only sleeps): its pid is alive until the test ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> int:
        started.append(subprocess.Popen(["sleep", "300"]))
        return started[-1].pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serving_state(ws: Path, router_pid: int, versions: dict[int, tuple[int, int]]) -> None:
    """``serving/MODEL/state.json`` as the local backend records it: a router (on a port nothing answers) and
    each version's weight and pid."""
    port = _free_port()
    state = {
        "model": MODEL,
        "router": {"pid": router_pid, "port": port, "url": f"http://127.0.0.1:{port}"},
        "versions": {
            str(v): {"weight": weight, "pid": pid, "port": _free_port(), "model_uri": f"models:/{MODEL}/{v}"}
            for v, (weight, pid) in versions.items()
        },
    }
    home = ws / "serving" / MODEL
    home.mkdir(parents=True, exist_ok=True)
    (home / "state.json").write_text(json.dumps(state), "utf-8")


def _register(ws: Path, versions: list[int]) -> None:
    """Versions of MODEL in the workspace's registry with their classes and evaluated accuracy, and no training
    run: the spec cannot be read, so that check fails."""
    client = store_client(ws)
    client.create_registered_model(MODEL)
    for _ in versions:
        client.create_model_version(
            MODEL,
            source=(ws / "model").as_uri(),
            tags={
                "mlops.task": "classification",
                "mlops.target.classes": json.dumps(CLASSES),
                "mlops.eval.metric.accuracy": "0.85",
            },
        )


def _wrong_answers(ws: Path, version: int, n: int = 40) -> None:
    """``n`` predictions of ``version`` in the log, and labels for them that say each one was wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    home = ws / "serving" / MODEL
    (home / "predictions").mkdir(parents=True, exist_ok=True)
    (home / "feedback").mkdir(parents=True, exist_ok=True)
    now = time.time()
    ids = [f"{version:04x}{i:028x}" for i in range(n)]
    lines = [
        json.dumps({"id": rid, "row": 0, "ts": now - 60 + i * 0.01, "version": version, "prediction": i % 2})
        for i, rid in enumerate(ids)
    ]
    (home / "predictions" / f"20300101T00000{version}-1.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    table = pa.table(
        {
            "request_id": pa.array(ids, pa.string()),
            "row": pa.array([0] * n, pa.int64()),
            "label": pa.array([CLASSES[1 - i % 2] for i in range(n)], pa.string()),
            "received_at": pa.array([now] * n, pa.float64()),
        }
    )
    pq.write_table(table, home / "feedback" / f"batch-{version}.parquet")


def _context(ws: Path, hook: WebhookReceiver) -> ToolContext:
    policy_path = ws.parent / "monitor-policy.yaml"
    routes = {MODEL: {"owner": "dana", "alert": f"webhook:{hook.url}"}}
    policy_path.write_text(yaml.safe_dump({"monitoring": {"min_labelled": 10, "routes": routes}}), "utf-8")
    ws.mkdir(parents=True, exist_ok=True)
    return ToolContext(
        workspace=ws, audit=AuditLog(ws / "audit.jsonl"), policy=load_policy(policy_path), redactor=PatternRedactor()
    )


def test_an_endpoint_that_is_down_alerts_its_owner_and_a_failing_check_stops_nothing(
    workspace: Path, processes: Callable[[], int]
) -> None:
    """Router and version dead: a critical endpoint_down alert whose runbook says `mlops-supervisor up MODEL`,
    delivered with the quality alert of the check that could run, while the checks that failed (the spec has no
    training run, the metrics and drift need a live endpoint) are named in not_checked. Back up: the endpoint
    alert resolves once; the quality alert, judged again and still breaching, is not re-sent."""
    with WebhookReceiver() as hook:
        ctx = _context(workspace, hook)
        _register(workspace, [1])
        _wrong_answers(workspace, 1)
        _serving_state(workspace, _dead_pid(), {1: (100, _dead_pid())})

        down = monitor_model(ctx, MODEL)
        assert down["version"] == 1 and down["checks"]["endpoint"] == {"router_alive": False, "versions_down": [1]}
        assert [p.split(":")[0] for p in down["not_checked"]] == ["spec", "service metrics", "drift"]
        assert down["not_checked"][0] == "spec: KeyError: 'mlops.training.run_id'"
        assert down["checked"] == ["quality_decay"]
        (body,) = hook.received
        by_subject = {a["labels"]["subject"]: a for a in body["alerts"]}
        assert set(by_subject) == {ENDPOINT_DOWN, "accuracy"}
        endpoint = by_subject[ENDPOINT_DOWN]
        assert (endpoint["labels"]["kind"], endpoint["labels"]["severity"], endpoint["labels"]["owner"]) == (
            "error_rate",
            "critical",
            "dana",
        )
        assert "the router and version 1 not running" in endpoint["annotations"]["summary"]
        assert f"`mlops-supervisor up {MODEL}`" in endpoint["annotations"]["runbook_mitigate"]
        assert by_subject["accuracy"]["labels"]["version"] == "1"
        assert down["proposals"][0] == {
            "action": "restart",
            "reason": "the router or a version of the endpoint is not running",
            "command": f"mlops-supervisor up {MODEL}",
        }
        assert [p["action"] for p in down["proposals"]] == ["restart", "retrain"]

        # restarted (the router's port still answers nothing, and the registry has no data digest for drift)
        _serving_state(workspace, processes(), {1: (100, processes())})
        up = monitor_model(ctx, MODEL)
        assert up["checks"]["endpoint"] == {"router_alive": True, "versions_down": []}
        assert up["not_checked"][1].startswith("service metrics: ConnectError")
        assert up["not_checked"][2] == "drift: KeyError: 'mlops.data.digest'"
        assert len(hook.received) == 2
        resolved = hook.received[1]
        assert resolved["status"] == "resolved"
        assert [a["labels"]["subject"] for a in resolved["alerts"]] == [ENDPOINT_DOWN]
        assert (up["delivery"]["resolved"], up["delivery"]["suppressed"]) == (1, 1)
        assert [p["action"] for p in up["proposals"]] == ["retrain"]

        again = monitor_model(ctx, MODEL)
        assert again["delivery"]["status"] == "nothing" and len(hook.deliveries) == 2


def test_alerts_of_a_version_that_left_the_serving_state_resolve_once(
    workspace: Path, processes: Callable[[], int]
) -> None:
    """Versions 1 and 2 both decay on labels and both alert. Version 2 is rolled back (the state records only
    version 1): its alert resolves once and is not raised again though its labelled predictions are still in
    the window; version 1's stays firing and is not re-sent."""
    with WebhookReceiver() as hook:
        ctx = _context(workspace, hook)
        _register(workspace, [1, 2])
        _wrong_answers(workspace, 1)
        _wrong_answers(workspace, 2)
        _serving_state(workspace, processes(), {1: (90, processes()), 2: (10, processes())})

        both = monitor_model(ctx, MODEL)
        assert sorted((a["kind"], a["version"]) for a in both["alerts"]) == [
            ("quality_decay", 1),
            ("quality_decay", 2),
        ]
        assert both["delivery"]["sent"] == 2 and both["not_routed"] == []

        _serving_state(workspace, processes(), {1: (100, processes())})
        after = monitor_model(ctx, MODEL)
        assert [(a["kind"], a["version"]) for a in after["alerts"]] == [("quality_decay", 1)]
        assert after["not_routed"] == ["quality_decay of version 2 (accuracy): that version no longer serves"]
        assert (after["delivery"]["sent"], after["delivery"]["resolved"], after["delivery"]["suppressed"]) == (0, 1, 1)
        gone = hook.received[1]
        assert [(a["status"], a["labels"]["version"]) for a in gone["alerts"]] == [("resolved", "2")]

        monitor_model(ctx, MODEL)
        assert len(hook.deliveries) == 2


def test_a_model_with_no_serving_state_is_not_served(workspace: Path) -> None:
    """No state recorded: not_serving (exit 2), and nothing is sent or written."""
    with WebhookReceiver() as hook:
        ctx = _context(workspace, hook)
        with pytest.raises(InvalidInputError, match=f"{MODEL} serves no version") as caught:
            monitor_model(ctx, MODEL)
        assert caught.value.reason_code == "not_serving" and hook.deliveries == []
    assert not (workspace / "monitoring").exists()


def test_the_serving_version_is_the_busiest_running_one_ties_to_the_higher_number() -> None:
    """By weight among the running versions, a tie to the higher version number (10 over 9, not "9" over "10");
    all down, among those recorded."""
    alive = {
        "9": {"weight": 50, "alive": True},
        "10": {"weight": 50, "alive": True},
        "11": {"weight": 0, "alive": True},
    }
    assert _serving_version({"model": MODEL, "versions": alive}) == 10
    down = {"3": {"weight": 100, "alive": False}, "4": {"weight": 0, "alive": True}}
    assert _serving_version({"model": MODEL, "versions": down}) == 4
    dead = {3: {"weight": 20, "alive": False}, 4: {"weight": 80, "alive": False}}
    assert _serving_version({"model": MODEL, "versions": dead}) == 4


def test_a_monitor_on_a_schedule_keeps_only_the_newest_plots_of_each_kind(tmp_path: Path) -> None:
    """Drawing a drift or latency plot deletes all but the newest 20 of that kind for that model; other
    kinds, other files and other models' plots are left alone."""
    from mlops_supervisor.tools.monitoring._plots import KEEP_PLOTS, drift_plot, latency_plot

    reports = tmp_path / "reports" / MODEL
    reports.mkdir(parents=True)
    old = int(time.time()) - 10_000
    for i in range(25):
        for kind in ("drift", "latency", "quality"):
            (reports / f"{kind}-{old + i}.png").write_bytes(b"png")
    (reports / "drift-notes.png").write_bytes(b"mine")
    other = tmp_path / "reports" / "other-model"
    other.mkdir()
    (other / f"drift-{old}.png").write_bytes(b"png")

    table = {"age": {"judged": True, "drifted": True, "psi": 0.5, "p_value": 0.001, "test": "ks"}}
    drawn = drift_plot(reports, MODEL, table, 0.2, 0.01)
    assert drawn is not None and drawn.exists()
    drifts = sorted(p.name for p in reports.glob("drift-*.png"))
    assert len(drifts) == KEEP_PLOTS + 1 and "drift-notes.png" in drifts and drawn.name in drifts
    assert f"drift-{old + 5}.png" not in drifts and f"drift-{old + 6}.png" in drifts  # the 19 newest old ones stay
    assert len(list(reports.glob("quality-*.png"))) == 25 and len(list(reports.glob("latency-*.png"))) == 25
    assert (other / f"drift-{old}.png").exists()

    window = {"1": {"buckets": {"0.01": 3.0, "0.1": 5.0, "+Inf": 5.0}, "requests": 5.0, "errors": 0.0}}
    assert latency_plot(reports, MODEL, window) is not None
    assert len(list(reports.glob("latency-*.png"))) == KEEP_PLOTS
