"""Every supervisor run is an MLflow trace in the workspace's store, redacted before anything is stored.

The acceptance test runs the canary pipeline (data to a production deploy that pauses for carol's
approval, then a chat over planted secrets and personal data) and reads every trace back through
``MlflowClient``: spans for the graph's nodes, the tools, the decisions and the approval, and no
planted canary in any span field or in the trace's info and tags. Then: a span the redactor cannot
handle is stored withheld; a store that is down leaves the run to finish, reported once; two
supervisors on two workspaces trace each to its own store, each with its own redactor.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_supervisor import Supervisor
from mlops_supervisor._settings import Settings
from mlops_supervisor._tracing import WITHHELD, SupervisorTracing, record_step, step_clock, step_span
from mlops_supervisor.policies import Finding, PatternRedactor
from mlops_supervisor.testing import KeyRing
from mlops_supervisor.tools import GovernedTool
from mlops_supervisor.tools.serving import LocalBackend
from tests.conftest import store_client
from tests.test_canaries import PLANTS, _chat, _plant_in_mlflow, _run_pipeline_to_deployment


@pytest.fixture(scope="module", autouse=True)
def _tracing_on() -> Iterator[None]:
    """The suite turns tracing off (tests/conftest.py); here traces are part of what is checked."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLOPS_TRACING", "1")
        yield


EXPERIMENT = "mlops-supervisor"


def _traces(ws: Path, *, uri: str | None = None) -> list[Any]:
    """Every trace in ``ws``'s store (or ``uri``), with its spans, oldest first."""
    client = store_client(ws) if uri is None else _client(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    found = client.search_traces(locations=[experiment.experiment_id], max_results=500, order_by=["timestamp_ms ASC"])
    return [client.get_trace(t.info.trace_id) for t in found]


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _fields(trace: Any) -> Iterator[tuple[str, str]]:
    """(where, text) of everything stored of a trace: its info, tags, metadata, previews and each span's
    name, inputs, outputs, attributes, events and status."""
    info = trace.info
    yield "info", json.dumps(info.to_dict(), default=str)
    yield "tags", json.dumps(info.tags)
    yield "metadata", json.dumps(info.trace_metadata)
    yield "previews", f"{info.request_preview} {info.response_preview}"
    for span in trace.data.spans:
        where = f"span {span.name}"
        yield f"{where} name", span.name
        yield f"{where} inputs", json.dumps(span.inputs, default=str)
        yield f"{where} outputs", json.dumps(span.outputs, default=str)
        yield f"{where} attributes", json.dumps(span.attributes, default=str)
        yield f"{where} events", json.dumps([(e.name, e.attributes) for e in span.events], default=str)
        yield f"{where} status", f"{span.status.status_code} {span.status.description}"
    yield "whole trace", trace.to_json()


def _spans(trace: Any, *, name: str | None = None, prefix: str | None = None) -> list[Any]:
    return [
        s
        for s in trace.data.spans
        if (name is None or s.name == name) and (prefix is None or s.name.startswith(prefix))
    ]


def _by_thread(traces: list[Any]) -> dict[str, list[Any]]:
    threads: dict[str, list[Any]] = {}
    for trace in traces:
        threads.setdefault(trace.info.tags["mlops.thread_id"], []).append(trace)
    return threads


# --- (a) the acceptance test -----------------------------------------------------------------------


def test_a_pipeline_paused_and_approved_is_traced_with_no_canary_in_any_span(tmp_path: Path, keys: KeyRing) -> None:
    """The canary pipeline and chat, read back from the store: node, tool, decision and approval spans, the
    interrupt as an id and a summary, tags naming the runs and versions touched, and not one canary."""
    ws = tmp_path / "ws"
    try:
        outputs = _run_pipeline_to_deployment(ws, tmp_path, keys)
        experiment = _plant_in_mlflow(ws, outputs["train_model"])
        _chat(ws, tmp_path, experiment)
    finally:
        LocalBackend.for_workspace(ws).down()
    traces = _traces(ws)
    threads = _by_thread(traces)
    pipeline = next(t for t in threads.values() if t[0].info.tags["mlops.kind"] == "pipeline")
    assert [t.info.tags["mlops.kind"] for t in pipeline] == ["pipeline", "approve"]
    paused, approved = pipeline
    assert (paused.info.tags["mlops.status"], approved.info.tags["mlops.status"]) == ("awaiting_approval", "done")
    assert paused.info.tags["mlops.requester"] == approved.info.tags["mlops.requester"] == "alice"
    assert approved.info.tags["mlops.actor"] == "carol"

    # the graph's nodes, the model calls, the tools, the decisions and the approval are spans
    names = {s.name for t in pipeline for s in t.data.spans}
    assert {"pipeline", "approve", "supervisor", "data", "experimentation", "policy", "tools", "approval"} <= names
    assert {"finish", "tool train_model", "tool register_model", "tool deploy_model"} <= names
    tool = _spans(paused, name="tool train_model")[0]
    assert tool.span_type == "TOOL" and tool.attributes["mlops.outcome"] == "ok"
    assert tool.outputs and "run_id" in json.dumps(tool.outputs)
    held = _spans(paused, name="decision deploy_model")[0]
    assert held.span_type == "GUARDRAIL"
    assert (held.attributes["mlops.decision"], held.outputs["decision"]) == ("needs_approval", "needs_approval")
    assert held.attributes["mlops.reason_code"] == held.outputs["reason_code"] != ""
    allowed = _spans(paused, name="decision train_model")[0]
    assert allowed.attributes["mlops.decision"] == "allow"
    (approval,) = _spans(approved, name="approval deploy_model")
    assert approval.attributes["mlops.decision"] == "allow" and approval.inputs["approver"] == "carol"
    assert approval.inputs["request_id"] == paused.info.tags["mlops.approval_request"]
    assert _spans(approved, name="tool deploy_model")[0].attributes["mlops.outcome"] == "ok"
    assert any(s.span_type == "CHAT_MODEL" for t in traces for s in t.data.spans)

    # the paused approval node records the interrupt: the request's id and a one-line summary, no arguments
    (node,) = [s for s in _spans(paused, name="approval") if s.status.status_code == "ERROR"]
    request_id = paused.info.tags["mlops.approval_request"]
    assert request_id.startswith("approval-") and request_id in node.status.description
    assert "deploy_model" in node.status.description and "waiting for a listed approver" in node.status.description
    recorded = node.status.description + json.dumps([(e.name, e.attributes) for e in node.events])
    assert "GraphInterrupt" in recorded and request_id in recorded
    assert "'args'" not in recorded and '"args"' not in recorded and "small-model" not in recorded

    # tags name the runs and versions touched; the trace is linked from the run
    train_run = outputs["train_model"]["best"]["run_id"]
    assert train_run in paused.info.tags["mlops.run_ids"].split(",")
    assert "small-model/1" in approved.info.tags["mlops.model_versions"].split(",")
    client = store_client(ws)
    run_experiment = client.get_run(train_run).info.experiment_id
    linked = client.search_traces(
        run_id=train_run, locations=[paused.info.experiment_id, run_experiment], include_spans=False
    )
    assert paused.info.trace_id in {t.info.trace_id for t in linked}

    # no planted canary in any field of any trace (the store canaries included: they must not reach a trace)
    canaries = [c for plant in PLANTS.values() for c in plant.canaries]
    leaks = {
        f"{c.where}:{c.kind}": where
        for trace in traces
        for where, text in _fields(trace)
        for c in canaries
        if c.needle in text
    }
    assert leaks == {}, leaks
    fields = "\n".join(text for trace in traces for _, text in _fields(trace))
    assert "<API_KEY>" in fields and "<EMAIL_ADDRESS>" in fields  # the canaries did reach the spans, redacted

    # the result lists the thread's traces and the report links them
    with Supervisor(ws, user="alice") as sup:
        result = sup.status(paused.info.tags["mlops.thread_id"])
    assert result.trace_ids == [paused.info.trace_id, approved.info.trace_id]  # type: ignore[union-attr]
    assert approved.info.trace_id in result.report.verification


# --- (b) fail closed -------------------------------------------------------------------------------

MARKER = "UNREDACTABLE-7f3c"


class _BrokenOnMarker(PatternRedactor):
    """Redacts as PatternRedactor does, but raises on one marker and answers another with a non-string."""

    def redact_text(self, text: str) -> str:
        if MARKER in text:
            raise RuntimeError(f"cannot redact {text}")
        if "ODD-VALUE" in text:
            return object()  # type: ignore[return-value]
        return super().redact_text(text)

    def findings(self, text: str) -> list[Finding]:
        return super().findings(text)


def test_a_span_the_redactor_cannot_handle_is_stored_withheld_not_raw(workspace: Path) -> None:
    """The redactor raising, or answering with something that is not text: that span keeps its name's
    place, type and timing but ``WITHHELD`` for its payload; the trace's other spans are redacted as usual."""
    workspace.mkdir(mode=0o700)
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    tracing = SupervisorTracing(workspace=workspace, tracking_uri=uri, redactor=_BrokenOnMarker(), log=_Log())
    secret = "sk-proj-" + "Zq9" * 10
    with tracing.run("ask", thread_id="t-fail", actor="alice", inputs={"request": f"use {secret}"}) as traced:
        record_step("clean", "GUARDRAIL", started_ns=step_clock(), inputs={"text": secret}, outputs="ok")
        record_step("raises", "GUARDRAIL", started_ns=step_clock(), inputs={"note": f"x {MARKER} {secret}"})
        with step_span("odd", "TOOL", inputs={"n": 1}) as step:
            step.finish(outputs="ODD-VALUE " + secret, attributes={"mlops.outcome": "ok"})
        with pytest.raises(ValueError, match="boom"), step_span("failing", "TOOL", inputs={"n": 2}):
            raise ValueError(f"boom {MARKER}")
    assert traced.trace_id and traced.problem == ""
    trace = _client(uri).get_trace(traced.trace_id)
    spans = {s.name: s for s in trace.data.spans}
    assert spans["clean"].inputs == {"text": "<API_KEY>"} and spans["ask"].inputs == {"request": "use <API_KEY>"}
    withheld = [s for s in trace.data.spans if s.name == "span withheld"]
    assert len(withheld) == 3  # raises, odd, failing
    for span in withheld:
        assert span.inputs == WITHHELD
        assert span.attributes["mlops.redaction"].startswith("failed (")
        assert [e.name for e in span.events] == ["redaction_failed"]
    (failing,) = [s for s in withheld if s.status.status_code == "ERROR"]
    assert failing.status.description == WITHHELD
    stored = "\n".join(text for _, text in _fields(trace))
    assert secret not in stored and MARKER not in stored and "ODD-VALUE" not in stored


class _Log:
    def __init__(self) -> None:
        self.warnings: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append({"event": event, **fields})


# --- (c) a store that is down ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("store", ["server", "sqlite"])
def test_a_store_that_is_down_is_reported_once_and_the_run_finishes(
    workspace: Path, tmp_path: Path, store: str
) -> None:
    """A tracking server nobody listens on, or a SQLite file that cannot be created: each run finishes done,
    its result and report say it is not traced, and the log warns once for the two runs."""
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's folder should be", "utf-8")
    uri = f"http://127.0.0.1:{_closed_port()}" if store == "server" else f"sqlite:///{blocked / 'mlflow.db'}"
    with Supervisor(workspace, user="alice", settings=Settings(mlflow_tracking_uri=uri)) as sup:
        first = sup.ask("verify audit")
        second = sup.ask("verify audit", thread_id=first.thread_id)
    for result in (first, second):
        assert result.status == "done", result.report.summary
        assert result.trace_id is None and result.trace_ids == []
        assert result.tracing_problem.startswith("tracing is off for this run")
        assert "Not traced: tracing is off" in result.report.verification
    log = (workspace / "logs" / "mlops-supervisor.jsonl").read_text("utf-8").splitlines()
    warnings = [json.loads(line) for line in log if "tracing_unavailable" in line]
    assert len(warnings) == 1, warnings


def test_mlops_tracing_0_turns_it_off(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MLOPS_TRACING=0 a run writes no trace: a request that touches no MLflow store creates none."""
    monkeypatch.setenv("MLOPS_TRACING", "0")
    with Supervisor(workspace, user="alice") as sup:
        result = sup.ask("verify audit")
    assert result.status == "done"
    assert (result.trace_id, result.trace_ids, result.tracing_problem) == (None, [], "")
    assert not (workspace / "mlflow.db").exists()
    assert "MLflow trace" not in result.report.verification


# --- (d) two supervisors, two stores, two redactors --------------------------------------------------

ZULU = "zulu-station-4471"


class _ZuluRedactor(PatternRedactor):
    """PatternRedactor that also hides one code word: only workspace two's supervisor uses it."""

    def redact_text(self, text: str) -> str:
        return super().redact_text(text).replace(ZULU, "<CODE_WORD>")


def _echoing_show_policy(root: Path) -> Any:
    """The tools of a supervisor on ``root``, with a show_policy whose raw output holds the code word: the
    tool body's own span sees it before the chokepoint redacts it."""
    with Supervisor(root) as probe:
        real = probe.tools.get("show_policy")

        def show_policy() -> str:
            return json.dumps({"policy": "default", "notes": f"kept at {ZULU}"})

        echoing = GovernedTool.from_function(
            "show_policy", real.tool.description, real.tool.args_schema, show_policy, mutates=False
        )
        return probe.tools.replaced(show_policy=echoing)


def test_two_supervisors_on_two_workspaces_trace_each_to_its_own_store(tmp_path: Path) -> None:
    """Interleaved runs of two supervisors in one process: each store holds exactly its own threads' traces,
    each redacted by its own supervisor's redactor (the code word a tool body returns raw is hidden only in
    workspace two, whose redactor knows it)."""
    one, two = tmp_path / "one", tmp_path / "two"
    with (
        Supervisor(one, user="alice", redactor=PatternRedactor(), tools=_echoing_show_policy(one)) as first,
        Supervisor(two, user="bob", redactor=_ZuluRedactor(), tools=_echoing_show_policy(two)) as second,
    ):
        a1 = first.ask("show policy")
        b1 = second.ask("show policy")
        a2 = first.ask("verify audit", thread_id=a1.thread_id)
        b2 = second.ask("verify audit")
    assert {a1.status, a2.status, b1.status, b2.status} == {"done"}
    traces_one, traces_two = _traces(one), _traces(two)
    assert {t.info.trace_id for t in traces_one} == {a1.trace_id, a2.trace_id}
    assert {t.info.trace_id for t in traces_two} == {b1.trace_id, b2.trace_id}
    assert a2.trace_ids == [a1.trace_id, a2.trace_id] and b2.trace_ids == [b2.trace_id]
    assert {t.info.tags["mlops.actor"] for t in traces_one} == {"alice"}
    assert {t.info.tags["mlops.actor"] for t in traces_two} == {"bob"}
    stored_one = "\n".join(text for t in traces_one for _, text in _fields(t))
    stored_two = "\n".join(text for t in traces_two for _, text in _fields(t))
    assert ZULU in stored_one  # workspace one's redactor does not know the word
    assert ZULU not in stored_two and "<CODE_WORD>" in stored_two
