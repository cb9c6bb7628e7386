"""Serving pieces alone: the canary window arithmetic, record and analysis; one canary step; process liveness."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_supervisor.policies import AuditLog, InvalidInputError, PatternRedactor, Policy, RunError, load_policy
from mlops_supervisor.tools.core import ToolContext, using_store, write_json_atomic
from mlops_supervisor.tools.serving._advance import advance
from mlops_supervisor.tools.serving._canary import (
    CanaryRecord,
    analysis_in_force,
    canary_path,
    clear_canary,
    judge,
    read_canary,
    window_delta,
    write_canary,
)
from mlops_supervisor.tools.serving._metrics import read_router
from mlops_supervisor.tools.serving._processes import (
    ProcessRecord,
    alive,
    end,
    records,
    spawn,
    start_time,
    terminate,
)
from mlops_supervisor.tools.serving._rollback import _bad_and_good

# --- the canary's window arithmetic -----------------------------------------------------------


def _reading(requests: float, errors: float, buckets: dict[str, float]) -> dict[str, Any]:
    return {"requests": requests, "errors": errors, "buckets": buckets}


def test_a_window_is_the_difference_of_two_cumulative_readings() -> None:
    """Requests, errors and each latency bucket count only what happened since the snapshot."""
    then = _reading(100, 50, {"0.05": 100, "0.1": 100, "0.5": 100, "+Inf": 100})
    now = _reading(200, 52, {"+Inf": 200, "0.5": 200, "0.1": 195, "0.05": 190})  # as the text lists them
    window = window_delta(now, then)
    # over the whole history the p95 would be 0.05 s; over the window it is 0.1 s
    assert (window.requests, window.errors, window.p95_seconds) == (100, 2, 0.1)


def test_bounds_sort_by_value_not_by_text() -> None:
    """Buckets are ordered by their bound as a number ("10" after "2.5"), so the p95 is the right one."""
    now = _reading(100, 0, {"10": 100, "2.5": 90, "+Inf": 100})
    assert window_delta(now, None).p95_seconds == 10.0


def test_without_a_snapshot_the_window_is_everything_so_far() -> None:
    """A version absent from the snapshot counts from zero."""
    now = _reading(40, 3, {"0.05": 40, "+Inf": 40})
    window = window_delta(now, None)
    assert (window.requests, window.errors, window.p95_seconds) == (40, 3, 0.05)


def test_latency_beyond_the_largest_bound_reads_as_that_bound() -> None:
    """Requests only in the +Inf bucket give the largest finite bound as p95, not infinity."""
    now = _reading(10, 0, {"0.05": 0, "0.1": 0, "+Inf": 10})
    assert window_delta(now, None).p95_seconds == 0.1


def test_a_window_without_traffic_has_no_p95() -> None:
    """No request in the window: zero requests and no latency to judge."""
    same = _reading(7, 1, {"0.05": 7, "+Inf": 7})
    window = window_delta(same, same)
    assert (window.requests, window.errors, window.p95_seconds) == (0, 0, None)


# --- the canary record and its analysis -------------------------------------------------------


def _canary(
    snapshot: dict[str, dict[str, Any]] | None = None, history: list[dict[str, Any]] | None = None
) -> CanaryRecord:
    return CanaryRecord(
        version=2,
        stable=1,
        steps=[10, 50, 100],
        step=0,
        analysis={
            "window_seconds": 30,
            "min_requests": 100,
            "max_error_rate_increase": 0.01,
            "max_p95_latency_ratio": 1.5,
        },
        snapshot=snapshot or {},
        started_at="2025-01-01T00:00:00+00:00",
        step_started_at="2025-01-01T00:00:00+00:00",
        state="running",
        history=history or [],
    )


class _Versions:
    """A registry client that knows each version's tags, for the rollback choice."""

    def __init__(self, tags: dict[int, dict[str, str]]) -> None:
        self.tags = tags

    def get_model_version(self, model: str, version: str) -> Any:
        return type("Version", (), {"tags": self.tags[int(version)]})()


def test_rollback_goes_from_the_canary_to_its_stable_version() -> None:
    """With a canary in progress, rollback leaves it for the version it was compared with."""
    assert _bad_and_good(_Versions({}), "m", _canary(), champion=1) == (2, 1)


def test_rollback_of_a_deployment_without_a_stable_version_goes_to_the_champion() -> None:
    """A first deployment has no stable version: the champion is the known-good one, or none."""
    first = {**_canary(), "stable": None}
    assert _bad_and_good(_Versions({}), "m", first, champion=1) == (2, 1)  # type: ignore[arg-type]
    assert _bad_and_good(_Versions({}), "m", first, champion=None) == (2, None)  # type: ignore[arg-type]
    previous = {2: {"mlops.previous_champion": "1"}}
    assert _bad_and_good(_Versions(previous), "m", first, champion=2) == (2, 1)  # type: ignore[arg-type]


def test_rollback_without_a_canary_goes_from_the_champion_to_the_one_it_replaced() -> None:
    """No canary: the champion is the bad version and its recorded predecessor the good one."""
    assert _bad_and_good(_Versions({3: {"mlops.previous_champion": "2"}}), "m", None, champion=3) == (3, 2)
    assert _bad_and_good(_Versions({3: {}}), "m", None, champion=3) == (3, None)


def test_the_canary_record_round_trips_through_its_file(tmp_path: Path) -> None:
    """What is written is read back equal from <workspace>/serving/<model>/canary.json; cleared, it is gone."""
    assert read_canary(tmp_path, "m") is None
    record = _canary(snapshot={"1": _reading(5, 0, {"+Inf": 5})}, history=[{"step": 0, "verdict": "inconclusive"}])
    write_canary(tmp_path, "m", record)
    assert canary_path(tmp_path, "m") == tmp_path / "serving" / "m" / "canary.json"
    assert canary_path(tmp_path, "m").is_file()
    assert read_canary(tmp_path, "m") == record
    clear_canary(tmp_path, "m")
    assert read_canary(tmp_path, "m") is None
    clear_canary(tmp_path, "m")  # clearing twice is no error


def test_a_dead_canary_fails_even_without_traffic() -> None:
    """With no request in the window a live canary is inconclusive, a dead one fails on errors."""
    assert judge(_canary(), {}, canary_alive=True).verdict == "inconclusive"
    verdict = judge(_canary(), {}, canary_alive=False)
    assert verdict.verdict == "fail" and "error rate" in verdict.reasons[0]


def test_the_canary_is_judged_on_its_window_against_stables() -> None:
    """Errors from before the snapshot do not count; the window's error rate is compared with stable's."""
    snapshot = {
        "2": _reading(100, 50, {"0.05": 100, "+Inf": 100}),
        "1": _reading(1000, 20, {"0.05": 1000, "+Inf": 1000}),
    }
    now = {"2": _reading(200, 52, {"0.05": 200, "+Inf": 200}), "1": _reading(1100, 22, {"0.05": 1100, "+Inf": 1100})}
    assert judge(_canary(snapshot=snapshot), now, canary_alive=True).verdict == "pass"
    worse = {**now, "2": _reading(200, 60, {"0.05": 200, "+Inf": 200})}
    assert judge(_canary(snapshot=snapshot), worse, canary_alive=True).verdict == "fail"


# --- one canary step ---------------------------------------------------------------------------


class _Backend:
    """A serving backend with a live canary and no router; it notes whether the model's lock is held when asked."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.locked_while_asked: list[bool] = []

    def _lock_held(self) -> bool:
        (lock,) = (self.workspace / "locks").glob("*.lock")
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing the descriptor lets go of a lock it took
        return False

    def status(self, model: str) -> dict[str, Any]:
        self.locked_while_asked.append(self._lock_held())
        return {"model": model, "router": None, "versions": {1: {"alive": True}, 2: {"alive": True}}}

    def deploy(self, model: str, version: int, model_uri: str, *, weight: int) -> dict[str, Any]:
        raise AssertionError("a held step deploys nothing")

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        raise AssertionError("a held step moves no traffic")

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        raise AssertionError("a held step rolls nothing back")

    def stop(self, model: str) -> dict[str, Any]:
        raise AssertionError("a held step stops nothing")

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        self.locked_while_asked.append(self._lock_held())
        return {}  # no router: no traffic yet


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    """A tool context over a fresh workspace."""
    return ToolContext(
        workspace=tmp_path,
        audit=AuditLog(tmp_path / "audit.jsonl"),
        policy=load_policy(None),
        redactor=PatternRedactor(),
    )


def test_an_inconclusive_step_holds_under_the_models_lock(ctx: ToolContext) -> None:
    """Too little traffic: the weight stays, the verdict joins the history, and the backend was asked under the lock."""
    write_canary(ctx.workspace, "m", _canary())
    backend = _Backend(ctx.workspace)
    outcome = advance(ctx, backend, "m")
    assert (outcome["verdict"], outcome["weight"], outcome["version"]) == ("inconclusive", 10, 2)
    held = read_canary(ctx.workspace, "m")
    assert held is not None and held["step"] == 0
    assert [(h["step"], h["verdict"]) for h in held["history"]] == [(0, "inconclusive")]
    assert backend.locked_while_asked and all(backend.locked_while_asked)


# --- the analysis window, the policy's minimums, and the automatic rollback under the policy ------

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _exposition(counts: dict[str, tuple[int, int]]) -> str:
    """Prometheus text with ``(requests, errors)`` per version, every request within 50 ms."""
    lines = []
    for version, (requests, errors) in counts.items():
        lines.append(f'mlops_requests_total{{status="200",version="{version}"}} {requests - errors}')
        lines.append(f'mlops_requests_total{{status="500",version="{version}"}} {errors}')
        for le in ("0.05", "+Inf"):
            lines.append(f'mlops_request_latency_seconds_bucket{{le="{le}",version="{version}"}} {requests}')
    return "\n".join(lines) + "\n"


class _Endpoint:
    """A serving backend with a router that answers /metrics; it records the traffic changes asked of it."""

    def __init__(self, url: str, versions: dict[int, dict[str, Any]]) -> None:
        self.url = url
        self.versions = versions
        self.weights: list[dict[int, int]] = []
        self.rolled_back_to: list[int] = []

    def status(self, model: str) -> dict[str, Any]:
        return {"model": model, "router": {"alive": True, "url": self.url}, "versions": self.versions}

    def deploy(self, model: str, version: int, model_uri: str, *, weight: int) -> dict[str, Any]:
        raise AssertionError("a canary step deploys nothing")

    def set_weights(self, model: str, weights: dict[int, int]) -> dict[str, Any]:
        self.weights.append(dict(weights))
        for v, w in weights.items():
            self.versions[v]["weight"] = w
        return self.status(model)

    def rollback(self, model: str, to_version: int) -> dict[str, Any]:
        self.rolled_back_to.append(to_version)
        self.versions = {to_version: {**self.versions[to_version], "weight": 100}}
        return self.status(model)

    def stop(self, model: str) -> dict[str, Any]:
        raise AssertionError("a canary step stops nothing")

    def read_metrics(self, model: str) -> dict[str, dict[str, Any]]:
        return read_router(self, model)  # the router's /metrics, as the local backend reads it


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow store holding model ``m`` versions 1 and 2 (the tags a canary step writes need them)."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with using_store(uri) as client:
        client.create_registered_model("m")
        for _ in (1, 2):
            client.create_model_version("m", source=str(root / "model"))
    return uri


def _at(ctx: ToolContext, seconds: float, policy: Policy | None = None) -> ToolContext:
    """``ctx`` whose clock reads ``seconds`` after T0 (and under ``policy``, when given)."""
    moment = T0 + timedelta(seconds=seconds)
    return dataclasses.replace(ctx, clock=lambda: moment, policy=policy or ctx.policy)


def _policy(tmp_path: Path, **sections: Any) -> Policy:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(sections), "utf-8")
    return load_policy(path)


def _climbing() -> CanaryRecord:
    """Version 2 at the first of steps 10 and 50 beside version 1; the step started at T0; no snapshot yet."""
    return {**_canary(), "steps": [10, 50], "started_at": T0.isoformat(), "step_started_at": T0.isoformat()}


def test_a_passing_step_waits_for_its_window_then_takes_the_next_step(
    ctx: ToolContext, router: ThreadingHTTPServer
) -> None:
    """12 s into a 30 s window a good step holds, saying so; at 31 s it takes the next step and its window restarts."""
    write_canary(ctx.workspace, "m", _climbing())
    router.text = _exposition({"2": (200, 0), "1": (1800, 0)})  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{router.server_address[1]}"
    backend = _Endpoint(url, {1: {"alive": True, "weight": 90}, 2: {"alive": True, "weight": 10}})

    early = advance(_at(ctx, 12), backend, "m")
    assert (early["verdict"], early["weight"], early["reasons"][0]) == ("inconclusive", 10, "window open: 12 s of 30 s")
    held = read_canary(ctx.workspace, "m")
    assert held is not None and (held["step"], held["snapshot"]) == (0, {}) and backend.weights == []

    stepped = advance(_at(ctx, 31), backend, "m")
    assert (stepped["verdict"], stepped["weight"]) == ("pass", 50)
    assert backend.weights == [{2: 50, 1: 50}]
    moved = read_canary(ctx.workspace, "m")
    assert moved is not None and moved["step"] == 1
    assert moved["step_started_at"] == (T0 + timedelta(seconds=31)).isoformat()

    router.text = _exposition({"2": (400, 0), "1": (2000, 0)})  # type: ignore[attr-defined]
    again = advance(_at(ctx, 40), backend, "m")  # the next step's own window: 9 s of 30 s
    assert (again["verdict"], again["reasons"][0]) == ("inconclusive", "window open: 9 s of 30 s")
    assert backend.weights == [{2: 50, 1: 50}]


def test_the_policy_bake_time_and_request_minimum_apply_over_a_looser_record(
    ctx: ToolContext, router: ThreadingHTTPServer, tmp_path: Path
) -> None:
    """A policy tightened after the deploy (60 s, 300 requests) holds a step the recorded spec (30 s, 100) would pass."""
    write_canary(ctx.workspace, "m", _climbing())
    router.text = _exposition({"2": (200, 0), "1": (1800, 0)})  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{router.server_address[1]}"
    backend = _Endpoint(url, {1: {"alive": True, "weight": 90}, 2: {"alive": True, "weight": 10}})
    stricter = _policy(tmp_path, canary={"min_bake_seconds": 60})
    outcome = advance(_at(ctx, 31, stricter), backend, "m")
    assert (outcome["verdict"], outcome["reasons"][0]) == ("inconclusive", "window open: 31 s of 60 s")
    more = _policy(tmp_path, canary={"min_requests": 300})
    outcome = advance(_at(ctx, 61, more), backend, "m")
    assert outcome["verdict"] == "inconclusive" and "at least 300 needed" in outcome["reasons"][0]
    assert backend.weights == []
    assert analysis_in_force(_canary()["analysis"], stricter.canary)["window_seconds"] == 60


def test_a_failing_step_rolls_back_at_once_and_audits_the_decision_first(
    ctx: ToolContext, router: ThreadingHTTPServer, store: str
) -> None:
    """A dead canary 1 s into its window is rolled back now; an allow decision from canary_analysis precedes it."""
    ctx = dataclasses.replace(ctx, tracking_uri=store)
    write_canary(ctx.workspace, "m", _climbing())
    url = f"http://127.0.0.1:{router.server_address[1]}"
    backend = _Endpoint(url, {1: {"alive": True, "weight": 90}, 2: {"alive": False, "weight": 10}})
    outcome = advance(_at(ctx, 1), backend, "m")
    assert outcome["verdict"] == "fail" and outcome["rollback"]["to_version"] == 1
    assert backend.rolled_back_to == [1]
    lines = [r for r in ctx.audit.records() if r["event"] in {"decision", "rollback"}]
    assert [(r["event"], r.get("decision"), r.get("origin")) for r in lines] == [
        ("decision", "allow", "canary_analysis"),
        ("rollback", None, None),
    ]
    assert lines[0]["action"] == "rollback_model"


def test_a_failing_step_leaves_traffic_when_the_policy_denies_rollback(
    ctx: ToolContext, router: ThreadingHTTPServer, store: str, tmp_path: Path
) -> None:
    """Under tools.denied [rollback_model] a failed canary keeps its traffic; the refusal is audited and explained."""
    ctx = dataclasses.replace(ctx, tracking_uri=store, policy=_policy(tmp_path, tools={"denied": ["rollback_model"]}))
    write_canary(ctx.workspace, "m", _climbing())
    with using_store(store) as client:
        client.set_model_version_tag("m", "2", "mlops.canary.passed", "pending")
    url = f"http://127.0.0.1:{router.server_address[1]}"
    backend = _Endpoint(url, {1: {"alive": True, "weight": 90}, 2: {"alive": False, "weight": 10}})
    outcome = advance(_at(ctx, 1), backend, "m")
    assert outcome["verdict"] == "fail"
    assert outcome["rollback"].startswith("none: rollback_model is denied")
    assert outcome["traffic"] == "left as it is: version 1 at 90 %, version 2 at 10 %"
    assert "mlops-supervisor rollback m" in outcome["next"]
    assert backend.rolled_back_to == [] and backend.weights == []
    (line,) = [r for r in ctx.audit.records() if r["event"] in {"decision", "rollback"}]
    assert (line["event"], line["action"], line["decision"], line["reason_code"], line["origin"]) == (
        "decision",
        "rollback_model",
        "deny",
        "tool_denied_by_policy",
        "canary_analysis",
    )
    failed = read_canary(ctx.workspace, "m")
    assert failed is not None and failed["state"] == "failed"
    with using_store(store) as client:
        assert client.get_model_version("m", "2").tags["mlops.canary.passed"] == "false"
    settled = advance(_at(ctx, 60), backend, "m")  # nothing more to judge: a new deploy starts a new canary
    assert settled["verdict"] == "failed" and backend.weights == [] and backend.rolled_back_to == []


def test_a_step_without_a_canary_is_refused(ctx: ToolContext) -> None:
    """advance_canary with no canary in progress names the problem: no_canary."""
    with pytest.raises(InvalidInputError, match="no canary in progress") as refused:
        advance(ctx, _Backend(ctx.workspace), "m")
    assert refused.value.reason_code == "no_canary"


# --- processes ---------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process that runs until ended, leading its own process group."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2]


def _wait_for_zombie(pid: int) -> None:
    deadline = time.monotonic() + 10
    while _state(pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _state(pid) == "Z"
    os.kill(pid, 0)  # a zombie still answers kill(0): that alone would call it alive


def test_a_live_process_is_alive_and_only_with_its_own_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    """A running pid is alive; with another start time recorded it is someone else's, so not ours."""
    started = start_time(sleeper.pid)
    assert started is not None
    assert alive(sleeper.pid) and alive(sleeper.pid, started)
    assert not alive(sleeper.pid, str(int(started) + 1))
    sleeper.kill()
    sleeper.wait()
    assert not alive(sleeper.pid, started)


def test_a_zombie_child_of_ours_is_dead_and_reaped() -> None:
    """An exited child not yet waited for counts as dead, and asking reaps it."""
    proc = subprocess.Popen(["true"])
    _wait_for_zombie(proc.pid)
    assert not alive(proc.pid)
    assert _state(proc.pid) is None  # reaped: gone from /proc
    proc.wait()


def test_a_zombie_of_another_process_is_dead() -> None:
    """A zombie this process cannot reap (another process's child) counts as dead all the same."""
    # the child outlives the shell's exec, so only `sleep` is its parent, and sleep never reaps it
    # (with `true &` the shell could reap it itself before the exec, and there was no zombie)
    parent = subprocess.Popen(["sh", "-c", "sleep 0.3 & echo $!; exec sleep 60"], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        orphan = int(parent.stdout.readline())
        _wait_for_zombie(orphan)
        assert not alive(orphan)
        assert _state(orphan) == "Z"  # still there: not ours to reap
    finally:
        parent.kill()
        parent.communicate()


_DEAF_TO_SIGTERM = """
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
signal.pause()
"""


def _sigterm_pending(pid: int) -> bool:
    """Whether a SIGTERM sent to ``pid`` waits, blocked, in its pending set."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("ShdPnd:")]
    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def test_terminate_spares_another_start_time_and_kills_what_ignores_sigterm() -> None:
    """A recorded pid with another start time gets no signal; ours is SIGKILLed once SIGTERM's grace is over."""
    proc = subprocess.Popen([sys.executable, "-c", _DEAF_TO_SIGTERM], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        started = start_time(proc.pid)
        assert started is not None
        terminate(proc.pid, str(int(started) + 1), grace=0.2)
        assert not _sigterm_pending(proc.pid) and alive(proc.pid, started)
        terminate(proc.pid, started, grace=0.2)
        deadline = time.monotonic() + 10  # SIGKILL is sent, not waited for: the kernel ends it soon after
        while alive(proc.pid, started) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not alive(proc.pid, started)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def test_end_stops_a_recorded_process_and_drops_its_record(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """A process recorded under procs/ is listed by records; end stops it and removes the record."""
    record = ProcessRecord(pid=sleeper.pid, started=start_time(sleeper.pid), port=1, kind="model")
    write_json_atomic(tmp_path / "procs" / f"{sleeper.pid}.json", record)
    assert records(tmp_path) == [record]
    end(tmp_path, record)
    assert not alive(sleeper.pid, record["started"])
    assert records(tmp_path) == []


def test_a_server_that_exits_on_start_is_reported_and_leaves_no_record(tmp_path: Path) -> None:
    """spawn of a process that dies before /health raises RunError naming it and its log, and drops its record."""
    home = tmp_path / "m"
    with pytest.raises(RunError, match=r"(?s)m router process exited with 2 on start: .*invalid choice: 'bogus'"):
        spawn(home, ["bogus"], "router.log", startup_timeout=60)
    assert (home / "procs").is_dir() and records(home) == []


def test_ctrl_c_while_the_record_is_written_still_ends_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C that lands once the record is visible (while it is flushed) ends the process and drops the record."""
    from mlops_supervisor.tools.serving import _processes

    started: list[int] = []

    def record_then_interrupt(path: Path, value: Any) -> None:
        write_json_atomic(path, value)
        started.append(int(value["pid"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(_processes, "write_json_atomic", record_then_interrupt)
    home = tmp_path / "m"
    args = ["router", "--routes", str(tmp_path / "routes.json"), "--samples", str(tmp_path / "samples.jsonl")]
    with pytest.raises(KeyboardInterrupt):
        spawn(home, args, "router.log", startup_timeout=60)
    (pid,) = started
    assert not alive(pid)
    assert records(home) == []


def test_the_model_server_refuses_a_body_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body declared or sent over MAX_BODY is refused before it is read whole; one within it is read."""
    import asyncio

    from starlette.requests import Request

    from mlops_supervisor.tools.serving import _model_server

    monkeypatch.setattr(_model_server, "MAX_BODY", 16)

    def request(chunks: list[bytes], declared: int | None) -> Request:
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        headers = [(b"content-length", str(declared).encode())] if declared is not None else []

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return Request({"type": "http", "method": "POST", "headers": headers}, receive)

    read = _model_server._body_within_limit
    assert asyncio.run(read(request([b"0123456789", b"01234"], 15))) == b"012345678901234"
    assert asyncio.run(read(request([b"x"], 17))) is None  # declared too large: nothing is read
    assert asyncio.run(read(request([b"0123456789", b"0123456789"], None))) is None  # sent too large


def test_a_ctrl_c_swallowed_while_a_server_starts_still_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C whose KeyboardInterrupt is swallowed (as in a finalizer) still ends the start and its process."""
    from mlops_supervisor.tools.serving import _processes

    real_get = _processes.httpx.get
    swallowed: list[bool] = []

    def get_with_a_swallowed_interrupt(*args: Any, **kwargs: Any) -> Any:
        if not swallowed:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:  # what Python does to one raised inside a finalizer
                swallowed.append(True)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(_processes.httpx, "get", get_with_a_swallowed_interrupt)
    home = tmp_path / "m"
    args = ["router", "--routes", str(tmp_path / "routes.json"), "--samples", str(tmp_path / "samples.jsonl")]
    with pytest.raises(KeyboardInterrupt):
        spawn(home, args, "router.log", startup_timeout=60)
    assert swallowed == [True]
    assert records(home) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_server_processes_do_not_inherit_the_supervisors_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model server or router answers untrusted requests: the shared database's URL and password, the cluster's
    kubeconfig and the supervisor's keys stay behind; MLflow's own credentials (it reads the model with them) pass."""
    from mlops_supervisor.tools.serving._processes import _server_environment

    for name in ("MLOPS_DATABASE_URL", "PGPASSWORD", "KUBECONFIG", "MLOPS_KEY", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "for-the-model-server")
    env = _server_environment()
    assert "s3cret" not in env.values()
    assert env["MLFLOW_TRACKING_PASSWORD"] == "for-the-model-server" and env["PATH"] == os.environ["PATH"]
