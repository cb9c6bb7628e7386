"""The local serving backend: real server and router processes on loopback, weights, metrics, rollback, down."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import AuditLog
from mlops_supervisor.tools.core import using_store
from mlops_supervisor.tools.serving._local import LocalBackend
from mlops_supervisor.tools.serving._model_server import _Batcher, _numeric_in_signature_order, validate_records
from mlops_supervisor.tools.serving._processes import alive as _alive
from tests.conftest import CLI
from tests.test_pipeline import _adult_slice, small_spec

COLUMNS = {"age": "double", "workclass": "string"}


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ([1, 2], "must be a JSON object"),
        ({"dataframe_records": []}, "non-empty list"),
        ({"dataframe_records": [{"age": 3}]}, "lacks column(s) workclass"),
        ({"dataframe_records": [{"age": 3, "workclass": "x", "zip": 1}]}, "unknown column(s) zip"),
        ({"dataframe_records": [{"age": "old", "workclass": "x"}]}, "column 'age' must be a number"),
        ({"dataframe_records": [{"age": True, "workclass": "x"}]}, "column 'age' must be a number"),
        ({"dataframe_records": [{"age": 3, "workclass": 7}]}, "column 'workclass' must be a string"),
    ],
)
def test_bad_requests_are_named(payload: Any, needle: str) -> None:
    """Each malformed body gets a message naming the record, the column and what is expected."""
    problem = validate_records(payload, COLUMNS)
    assert isinstance(problem, str) and needle in problem


def test_good_requests_pass_in_every_scoring_format() -> None:
    """dataframe_records, dataframe_split and instances all give the same records; nulls are allowed."""
    records = [{"age": 3, "workclass": None}]
    assert validate_records({"dataframe_records": records}, COLUMNS) == records
    assert validate_records({"instances": records}, COLUMNS) == records
    split = {"dataframe_split": {"columns": ["age", "workclass"], "data": [[3, None]]}}
    assert validate_records(split, COLUMNS) == records


def test_concurrent_requests_share_one_predict_and_a_bad_one_fails_alone() -> None:
    """Requests queued together cost one ``predict``; one that breaks it gets its own error, the others answers."""
    calls: list[int] = []

    def predict(frame: pd.DataFrame) -> list[float]:
        calls.append(len(frame))
        if frame["workclass"].eq("bad").any():
            raise ValueError("unknown category 'bad'")
        return [age * 2 for age in frame["age"]]

    async def scenario() -> list[Any]:
        batcher = _Batcher(predict, COLUMNS)
        worker = asyncio.create_task(batcher.work())
        try:
            good = [batcher.submit([{"age": n, "workclass": "x"}]) for n in (1, 2, 3)]
            together = await asyncio.gather(*good)
            calls.append(-1)  # a marker between the two scenarios
            mixed = [batcher.submit([{"age": 4, "workclass": "x"}]), batcher.submit([{"age": 5, "workclass": "bad"}])]
            return [*together, *await asyncio.gather(*mixed, return_exceptions=True)]
        finally:
            worker.cancel()

    first, second, third, fourth, fifth = asyncio.run(scenario())
    assert (first, second, third, fourth) == ([2.0], [4.0], [6.0], [8.0])
    assert isinstance(fifth, ValueError) and "unknown category" in str(fifth)
    assert calls == [3, -1, 2, 1, 1]  # one call for three; the failed pair retried one by one


def test_the_plain_array_path_is_taken_only_where_it_answers_the_same() -> None:
    """All-numeric models fitted on these columns in this order get arrays; column pickers and strings keep frames."""
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X.iloc[:, :4].set_axis(["a", "b", "c", "d"], axis=1)
    numeric = dict.fromkeys(X.columns, "double")
    plain = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    picker = make_pipeline(ColumnTransformer([("s", StandardScaler(), ["a", "c"])]), LogisticRegression()).fit(X, y)
    assert _numeric_in_signature_order(plain, numeric)
    assert _numeric_in_signature_order(LogisticRegression().fit(X.to_numpy(), y), numeric)  # fitted on an array
    assert not _numeric_in_signature_order(picker, numeric)  # selects columns by name
    assert not _numeric_in_signature_order(plain, dict(reversed(numeric.items())))  # another order
    assert not _numeric_in_signature_order(plain, {**numeric, "d": "string"})
    rows = json.loads(X.head(50).to_json(orient="records"))
    fast = _Batcher(plain.predict, numeric, as_array=True)._run(rows)
    assert fast == _Batcher(plain.predict, numeric)._run(rows) == plain.predict(X.head(50)).tolist()


def _counts(metrics: str) -> dict[str, float]:
    """Successful requests per version from a Prometheus exposition."""
    found = re.findall(r'mlops_requests_total\{status="200",version="(\d+)"\} ([0-9.]+)', metrics)
    return {version: float(value) for version, value in found}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A workspace with version 1 (and a second registration, version 2) of a small model, and a backend."""
    root = tmp_path_factory.mktemp("serving")
    ws = root / "ws"
    with Supervisor(ws, user="alice") as sup:
        result = sup.run_pipeline(
            small_spec(root, _adult_slice(), data__sensitive_features=["sex"]), stop_after="evaluate"
        )
        assert result.status == "done", result.report.summary
        run_id = next(o.output for o in result.outputs if o.tool == "train_model")["best"]["run_id"]
        sup.tools.get("register_model").tool.invoke({"model": "small-model", "run_id": run_id})
        sup.tools.get("evaluate_model").tool.invoke({"model": "small-model", "version": 2})
        sup.tools.get("register_model").tool.invoke({"model": "small-model", "run_id": run_id})  # 3: not evaluated
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    with using_store(uri) as client:
        sources = {v: client.get_model_version("small-model", str(v)).source for v in (1, 2)}
    backend = LocalBackend.for_workspace(ws, uri)
    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet")))
    features = [c for c in test.columns if c not in ("class", "sex")]  # race is a feature of this spec
    records = json.loads(test[features].head(20).to_json(orient="records"))
    try:
        yield {"ws": ws, "uri": uri, "sources": sources, "backend": backend, "records": records}
    finally:
        backend.down()


def test_deploy_serves_predictions_through_the_router(served: dict[str, Any]) -> None:
    """One version behind the router answers with the model's own predictions; a bad request is a 400."""
    import mlflow.sklearn

    backend: LocalBackend = served["backend"]
    status = backend.deploy("small-model", 1, served["sources"][1], weight=100)
    url = status["router"]["url"]
    answer = httpx.post(f"{url}/invocations", json={"dataframe_records": served["records"]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-model-version"] == "1"
    with using_store(served["uri"]):
        model = mlflow.sklearn.load_model(served["sources"][1])
    frame = pd.DataFrame(served["records"])
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    frame[numeric] = frame[numeric].astype("float64")
    assert answer.json()["predictions"] == model.predict(frame).tolist()
    bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"age": 1}]}, timeout=10)
    assert bad.status_code == 400 and "lacks column(s)" in bad.json()["error"]


def test_weights_split_traffic_and_metrics_count_each_version(served: dict[str, Any]) -> None:
    """With version 2 at 30 %, both versions take traffic near their shares, and /metrics counts each."""
    backend: LocalBackend = served["backend"]
    backend.deploy("small-model", 1, served["sources"][1], weight=100)
    status = backend.deploy("small-model", 2, served["sources"][2], weight=30)
    assert {v: s["weight"] for v, s in status["versions"].items()} == {1: 70, 2: 30}
    url = status["router"]["url"]
    before = _counts(httpx.get(f"{url}/metrics", timeout=10).text)
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for record in served["records"] * 10:
            seen[
                client.post(f"{url}/invocations", json={"dataframe_records": [record]}).headers["x-model-version"]
            ] += 1
    assert 30 <= seen["2"] <= 90, seen  # expected 60 of 200; the bounds are about 4.5 standard deviations
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    after = _counts(metrics)
    assert {v: after.get(v, 0) - before.get(v, 0) for v in ("1", "2")} == {v: float(seen[v]) for v in ("1", "2")}
    assert 'mlops_request_latency_seconds_bucket{le="0.05",version="1"}' in metrics
    samples = (served["ws"] / "serving" / "small-model" / "samples.jsonl").read_text("utf-8").splitlines()
    assert samples and {"version", "records", "predictions"} <= set(json.loads(samples[0]))


def test_a_dead_version_shows_in_status_and_rollback_keeps_serving(served: dict[str, Any]) -> None:
    """Kill version 2's server: status says so; rollback to 1 sends all traffic there and every request succeeds."""
    backend: LocalBackend = served["backend"]
    backend.deploy("small-model", 1, served["sources"][1], weight=100)
    status = backend.deploy("small-model", 2, served["sources"][2], weight=50)
    os.kill(status["versions"][2]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(status["versions"][2]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    status = backend.status("small-model")
    assert status["versions"][2]["alive"] is False and status["versions"][1]["alive"] is True
    rolled = backend.rollback("small-model", 1)
    assert list(rolled["versions"]) == [1] and rolled["versions"][1]["weight"] == 100
    url = rolled["router"]["url"]
    with httpx.Client(timeout=10) as client:
        codes = {
            client.post(f"{url}/invocations", json={"dataframe_records": [r]}).status_code for r in served["records"]
        }
    assert codes == {200}


def test_down_stops_every_process(served: dict[str, Any], tmp_path: Path) -> None:
    """After down, no server or router of the workspace is alive and no state is left."""
    backend: LocalBackend = served["backend"]
    backend.deploy("small-model", 1, served["sources"][1], weight=100)
    status = backend.deploy("small-model", 2, served["sources"][2], weight=10)
    pids = [status["router"]["pid"], *(s["pid"] for s in status["versions"].values())]
    assert all(_alive(pid) for pid in pids)
    backend.down()
    assert not any(_alive(pid) for pid in pids)
    assert backend.models() == []


@pytest.mark.parametrize("target", ["canary", "staging"])
def test_deploy_without_a_passing_evaluation_is_refused_and_starts_nothing(served: dict[str, Any], target: str) -> None:
    """`deploy small-model version 3` (never evaluated): refused at the policy node, exit 3, no process started."""
    served["backend"].down()
    with Supervisor(served["ws"], user="alice") as sup:
        result = sup.ask(f"deploy small-model version 3 to {target}")
    assert (result.status, result.exit_code) == ("refused", 3)
    assert "evaluation_missing" in {d.reason_code for d in result.decisions}
    assert served["backend"].models() == []


def test_no_credential_in_the_tracking_uri_reaches_a_server_command_line(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """A tracking URI with user:password@ reaches the model server by environment: no cmdline (``ps``) shows it."""
    import mlflow.artifacts

    with using_store(served["uri"]):
        local = mlflow.artifacts.download_artifacts(served["sources"][1], dst_path=str(tmp_path / "model"))
    secret = "s3cret-pw-6d1f"
    backend = LocalBackend(tmp_path / "ws", tracking_uri=f"http://alice:{secret}@127.0.0.1:9/")
    try:
        status = backend.deploy("small-model", 1, local, weight=100)
        server, router = status["versions"][1]["pid"], status["router"]["pid"]
        command_lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in (server, router)}
        assert b"serving._main\x00model\x00" in command_lines[server]  # the model server, as started
        assert all(secret.encode() not in line for line in command_lines.values()), command_lines
        assert secret.encode() in Path(f"/proc/{server}/environ").read_bytes()  # what it was given instead
        answer = httpx.post(
            f"{status['router']['url']}/invocations", json={"dataframe_records": served["records"][:2]}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        written = [p for p in (tmp_path / "ws").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert written == []
    finally:
        backend.down()


def _traffic(url: str, records: list[dict[str, Any]], n: int) -> Counter[int]:
    codes: Counter[int] = Counter()
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            codes[
                client.post(f"{url}/invocations", json={"dataframe_records": [records[i % len(records)]]}).status_code
            ] += 1
    return codes


def test_a_canary_killed_mid_analysis_is_rolled_back_and_stable_keeps_serving(served: dict[str, Any]) -> None:
    """Version 1 serves; version 2 canaries at 10 %; its server dies; the analysis fails and rolls back by itself.

    The failure acts at once, though the step's window (30 s) is still open; the automatic
    rollback is preceded by its allow decision in the audit log.
    """
    served["backend"].down()
    # version 1 serving all traffic, as a first deploy leaves it (its approval is test_traffic_gates' subject)
    first = served["backend"].deploy("small-model", 1, served["sources"][1], weight=100)
    url = first["router"]["url"]
    assert _traffic(url, served["records"], 20) == Counter({200: 20})
    with Supervisor(served["ws"], user="alice") as sup:
        tools = sup.tools
        canary = json.loads(tools.get("deploy_model").tool.invoke({"model": "small-model", "version": 2}))
        assert (canary["role"], canary["weight"], canary["stable"]) == ("canary", 10, 1)
        _traffic(url, served["records"], 100)
        os.kill(canary["status"]["versions"]["2"]["pid"], signal.SIGKILL)  # JSON keys are strings
        during = _traffic(url, served["records"], 150)
        assert during[502] > 0  # requests routed to the dead canary fail until the analysis acts
        verdict = json.loads(tools.get("advance_canary").tool.invoke({"model": "small-model"}))
    assert verdict["verdict"] == "fail" and "error rate" in verdict["reasons"][0]
    assert verdict["rollback"]["to_version"] == 1
    status = served["backend"].status("small-model")
    assert list(status["versions"]) == [1] and status["versions"][1]["weight"] == 100
    assert _traffic(url, served["records"], 100) == Counter({200: 100})
    with using_store(served["uri"]) as client:
        tags = client.get_model_version("small-model", "2").tags
    assert tags["mlops.canary.passed"] == "false" and "canary analysis failed" in tags["mlops.rollback.reason"]
    audited = [r for r in AuditLog(served["ws"] / "audit.jsonl").records() if r.get("origin") == "canary_analysis"]
    assert [(r["event"], r["action"], r["decision"]) for r in audited][-1] == ("decision", "rollback_model", "allow")


def test_cli_down_stops_what_a_deploy_started(served: dict[str, Any], cli: Any) -> None:
    """`mlops-supervisor down --json` in another process ends every server and router of the workspace."""
    status = served["backend"].deploy("small-model", 1, served["sources"][1], weight=100)
    pids = [status["router"]["pid"], status["versions"][1]["pid"]]
    done = cli("down", "--json", ws=served["ws"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stopped"] == [{"model": "small-model", "stopped": 2, "already_dead": 0}]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _wait_dead(pids: list[int], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_alive(pid) for pid in pids)


def test_a_killed_router_shows_in_status_and_up_restarts_it_on_its_url(served: dict[str, Any], cli: Any) -> None:
    """SIGKILL the router: `status` says it is down, `up` restarts it on the same URL, `down` ends everything."""
    served["backend"].down()
    status = served["backend"].deploy("small-model", 1, served["sources"][1], weight=100)
    router, url = status["router"]["pid"], status["router"]["url"]
    os.kill(router, signal.SIGKILL)
    assert _wait_dead([router])

    seen = json.loads(cli("status", "--json", ws=served["ws"]).stdout)
    (endpoint,) = seen["endpoints"]
    assert (endpoint["model"], endpoint["router_alive"], endpoint["versions"]["1"]["alive"]) == (
        "small-model",
        False,
        True,
    )
    assert "not running: small-model router" in seen["report"]["summary"]

    done = cli("up", "--json", ws=served["ws"])
    assert done.returncode == 0, done.stderr
    (restored,) = json.loads(done.stdout)["restored"]
    assert restored["restarted"] == ["router"] and restored["router"]["url"] == url
    assert _traffic(url, served["records"], 20) == Counter({200: 20})
    assert cli("up", "--json", ws=served["ws"]).stdout.count('"restarted": []') == 1  # nothing left to restart

    pids = [restored["router"]["pid"], restored["versions"]["1"]["pid"]]
    done = cli("down", "--json", ws=served["ws"])
    assert json.loads(done.stdout)["stopped"] == [{"model": "small-model", "stopped": 2, "already_dead": 0}]
    assert _wait_dead(pids)
    assert json.loads(cli("status", "--json", ws=served["ws"]).stdout)["endpoints"] == []


def test_a_cli_killed_while_starting_a_server_leaves_nothing_down_cannot_find(served: dict[str, Any], cli: Any) -> None:
    """SIGKILL the CLI between starting a model server and routing to it: `status` shows the stray, `down` ends it."""
    served["backend"].down()
    procs = served["ws"] / "serving" / "small-model@staging" / "procs"
    command = [
        CLI, "--workspace", str(served["ws"]), "--as", "alice", "ask", "deploy small-model version 1 to staging",
    ]  # fmt: skip
    deploying = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(procs.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    deploying.kill()  # the CLI alone; the server it started runs in its own session
    deploying.wait()
    (record,) = [json.loads(p.read_text("utf-8")) for p in procs.glob("*.json")]
    assert _alive(record["pid"], record["started"])

    seen = json.loads(cli("status", "--json", ws=served["ws"]).stdout)
    (endpoint,) = seen["endpoints"]
    assert endpoint["model"] == "small-model@staging"
    assert [p["pid"] for p in endpoint["stray"]] == [record["pid"]] and endpoint["versions"] == {}
    assert "1 stray server process(es)" in seen["report"]["summary"]

    done = cli("down", "small-model", "--json", ws=served["ws"])  # a model's name stops its staging endpoint too
    assert json.loads(done.stdout)["stopped"] == [{"model": "small-model@staging", "stopped": 1, "already_dead": 0}]
    assert _wait_dead([record["pid"]])
    assert list(procs.glob("*.json")) == []


def test_ctrl_c_while_starting_a_server_stops_it(served: dict[str, Any]) -> None:
    """SIGINT to the CLI while a model server starts: exit 130, the server is stopped and its record removed."""
    served["backend"].down()
    procs = served["ws"] / "serving" / "small-model@staging" / "procs"
    command = [CLI, "--workspace", str(served["ws"]), "--as", "alice", "ask", "deploy small-model version 1 to staging"]
    deploying = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(procs.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = [json.loads(p.read_text("utf-8")) for p in procs.glob("*.json")]
    deploying.send_signal(signal.SIGINT)
    assert deploying.wait(timeout=60) == 130
    assert _wait_dead([record["pid"]])
    assert list(procs.glob("*.json")) == []


def test_a_recorded_pid_taken_by_another_process_is_not_signalled(served: dict[str, Any]) -> None:
    """State naming a pid that now belongs to an unrelated process: status calls it dead and down leaves it alone."""
    served["backend"].down()
    served["backend"].deploy("small-model", 1, served["sources"][1], weight=100)
    state_path = served["ws"] / "serving" / "small-model" / "state.json"
    state = json.loads(state_path.read_text("utf-8"))
    served["backend"].down()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        state["versions"]["1"]["pid"] = bystander.pid  # as if the system gave the dead server's pid to it
        state["router"] = None
        state_path.write_text(json.dumps(state), "utf-8")
        assert served["backend"].status("small-model")["versions"][1]["alive"] is False
        assert served["backend"].stop("small-model") == {"model": "small-model", "stopped": 0, "already_dead": 1}
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_metrics_and_drift_report_raise_alerts_on_shifted_traffic(served: dict[str, Any]) -> None:
    """Held-out rows as traffic: no drift. The same rows 25 years older: age drifts, with the rollback command."""
    served["backend"].down()
    (served["ws"] / "serving" / "small-model" / "samples.jsonl").unlink(missing_ok=True)
    test = pd.read_parquet(next(served["ws"].glob("datasets/*/splits/*/test.parquet")))
    features = [c for c in test.columns if c not in ("class", "sex")]
    rows = json.loads(test[features].to_json(orient="records"))
    batches = [rows[i : i + 5] for i in range(0, len(rows), 5)]
    deployed = served["backend"].deploy("small-model", 1, served["sources"][1], weight=100)
    served["backend"].set_sample_rate("small-model", 1.0)
    url = deployed["router"]["url"]
    with Supervisor(served["ws"], user="alice") as sup:
        tools = sup.tools
        with httpx.Client(timeout=10) as client:
            for batch in batches:
                client.post(f"{url}/invocations", json={"dataframe_records": batch})
        calm = json.loads(tools.get("drift_report").tool.invoke({"model": "small-model"}))
        metrics = json.loads(tools.get("service_metrics").tool.invoke({"model": "small-model"}))
        (served["ws"] / "serving" / "small-model" / "samples.jsonl").unlink()
        with httpx.Client(timeout=10) as client:
            for batch in batches:
                older = [{**row, "age": row["age"] + 25} for row in batch]
                client.post(f"{url}/invocations", json={"dataframe_records": older})
        shifted = json.loads(tools.get("drift_report").tool.invoke({"model": "small-model"}))
    assert metrics["versions"]["1"]["requests"] == len(batches) and metrics["versions"]["1"]["error_rate"] == 0
    assert metrics["versions"]["1"]["p99_ms"] is not None and Path(metrics["plot"]).exists()
    assert calm["live_rows"] == len(rows) and calm["drifted"] == [], calm["features"]
    assert shifted["drifted"] == ["age"]
    alert = next(a for a in shifted["alerts"] if a.get("feature") == "age")
    assert alert["runbook"]["rollback"] == "mlops-supervisor rollback small-model"
    assert Path(shifted["plot"]).exists()
