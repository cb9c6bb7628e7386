"""Notebooks: the async calls leave the event loop running and run one at a time on one supervisor; results
render as Markdown with the decisions as a table and the plots inline; examples/quickstart.ipynb runs headless."""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import nbformat
import pytest
import yaml
from markdown_it import MarkdownIt
from nbclient import NotebookClient

from mlops_supervisor import RunResult, Supervisor, UsageError
from mlops_supervisor._results import DecisionRecord, Report, ThreadSummary, ToolOutput, WorkspaceStatus
from mlops_supervisor._settings import Settings
from mlops_supervisor.policies import AuditLog, Policy, verify_audit_log
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.tools.serving import LocalBackend

from .conftest import REPO, champion_of

T = TypeVar("T")
MODEL = "adult-income-classifier"
_SHARED_REDACTOR = PresidioRedactor()
QUIET = Settings(tracing=False)  # the async tests are about threads, not traces: no MLflow store to set up


class SlowRedactor:
    """The real redactor, taking ``delay`` seconds over each text in ``slow`` (every text when ``slow`` is None),
    and noting when and on which thread it did."""

    def __init__(self, slow: set[str] | None, delay: float) -> None:
        self.slow, self.delay = slow, delay
        self.spans: list[tuple[str, int, float, float]] = []
        self._lock = threading.Lock()

    def redact_text(self, text: str) -> str:
        if self.slow is None or text in self.slow:
            start = time.monotonic()
            time.sleep(self.delay)
            with self._lock:
                self.spans.append((text, threading.get_ident(), start, time.monotonic()))
        return _SHARED_REDACTOR.redact_text(text)

    def findings(self, text: str) -> list[Any]:
        return _SHARED_REDACTOR.findings(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(_SHARED_REDACTOR, name)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` in a fresh event loop, as a notebook cell's ``await`` would."""
    return asyncio.run(coroutine)


async def ticking(times: list[float]) -> None:
    """Note the time every 10 ms, for as long as the event loop lets it run."""
    while True:
        await asyncio.sleep(0.01)
        times.append(time.monotonic())


def thread_lines(sup: Supervisor, thread_id: str) -> list[int]:
    """The positions in the audit log of ``thread_id``'s lines."""
    return [i for i, r in enumerate(sup.audit.records()) if r.get("thread_id") == thread_id]


# --- the async calls ---------------------------------------------------------------------------


def test_aask_runs_on_a_worker_thread_while_the_event_loop_keeps_ticking(workspace: Path) -> None:
    slow = SlowRedactor({"verify audit"}, 0.6)
    with Supervisor(workspace, model="offline", user="alice", redactor=slow, settings=QUIET) as sup:

        async def main() -> tuple[RunResult, list[float], int]:
            times: list[float] = []
            ticker = asyncio.create_task(ticking(times))
            result = await sup.aask("verify audit")
            ticker.cancel()
            return result, times, threading.get_ident()

        result, times, loop_thread = run(main())
    assert result.status == "done"
    assert [o.tool for o in result.outputs] == ["verify_audit_chain"]
    workers = {thread for _, thread, _, _ in slow.spans}
    assert len(workers) == 1 and loop_thread not in workers
    _, _, start, end = slow.spans[0]
    # 0.6 s at 10 ms a tick: a call made on the loop's own thread would leave no tick in that window
    assert len([t for t in times if start < t < end]) >= 10


def test_concurrent_aask_on_one_supervisor_run_one_after_the_other_in_order(workspace: Path) -> None:
    slow = SlowRedactor({"verify audit", "show policy"}, 0.4)
    with Supervisor(workspace, model="offline", user="alice", redactor=slow, settings=QUIET) as sup:

        async def main() -> list[RunResult]:
            return list(
                await asyncio.gather(
                    sup.aask("verify audit", thread_id="first"), sup.aask("show policy", thread_id="second")
                )
            )

        first, second = run(main())
        first_lines, second_lines = thread_lines(sup, "first"), thread_lines(sup, "second")
    assert (first.status, second.status) == ("done", "done")
    assert [o.tool for o in second.outputs] == ["show_policy"]
    texts = [text for text, _, _, _ in slow.spans]
    assert texts == sorted(texts, key=["verify audit", "show policy"].index)  # in the order they were made
    assert len({thread for _, thread, _, _ in slow.spans}) == 1  # the supervisor's one worker
    last_of_first = max(end for text, _, _, end in slow.spans if text == "verify audit")
    assert last_of_first <= min(start for text, _, start, _ in slow.spans if text == "show policy")
    # not interleaved: every line of the first request comes before the first line of the second
    assert first_lines and second_lines and max(first_lines) < min(second_lines)


def test_calls_on_different_supervisors_do_not_wait_for_each_other(workspace: Path) -> None:
    one = SlowRedactor({"verify audit"}, 0.8)
    two = SlowRedactor({"verify audit"}, 0.8)
    with (
        Supervisor(workspace, model="offline", user="alice", redactor=one, settings=QUIET) as a,
        Supervisor(workspace, model="offline", user="bob", redactor=two, settings=QUIET) as b,
    ):

        async def main() -> None:
            await asyncio.gather(a.aask("verify audit"), b.aask("verify audit"))

        run(main())
    (_, thread_one, start_one, end_one), (_, thread_two, start_two, end_two) = one.spans[0], two.spans[0]
    assert thread_one != thread_two
    assert start_two < end_one and start_one < end_two  # the two slow steps overlapped


def test_astream_yields_what_stream_yields_in_order(workspace: Path) -> None:
    slow = SlowRedactor({"verify audit then show policy"}, 0.5)
    with Supervisor(workspace, model="offline", user="alice", redactor=slow, settings=QUIET) as sup:

        async def main() -> tuple[list[Any], list[float]]:
            times: list[float] = []
            ticker = asyncio.create_task(ticking(times))
            events = [e async for e in sup.astream("verify audit then show policy", thread_id="async")]
            ticker.cancel()
            return events, times

        streamed, times = run(main())
        plain = list(sup.stream("verify audit then show policy", thread_id="sync"))

    def shape(events: list[Any]) -> list[tuple[str, Any]]:
        return [(type(e).__name__, getattr(e, "tool", None) or getattr(e, "status", None)) for e in events]

    assert shape(streamed) == shape(plain)
    assert len(streamed) > 4
    assert isinstance(streamed[-1], RunResult) and streamed[-1].status == "done"
    assert [o.tool for o in streamed[-1].outputs] == ["verify_audit_chain", "show_policy"]
    start, end = slow.spans[0][2], slow.spans[0][3]
    assert len([t for t in times if start < t < end]) >= 8


def test_astream_raises_what_the_run_raises(workspace: Path, tmp_path: Path) -> None:
    script = tmp_path / "loop.yaml"
    script.write_text(
        yaml.safe_dump(
            {"supervisor": [{"route": "security", "task": "look"}] * 20, "security": [{"content": "nothing"}] * 20}
        )
    )
    tight = Policy.model_validate({"limits": {"recursion_limit": 6}})
    with Supervisor(workspace, model=f"scripted:{script}", user="alice", policy=tight) as sup:

        async def main() -> tuple[list[Any], BaseException | None]:
            seen: list[Any] = []
            try:
                async for event in sup.astream("look around", thread_id="loop"):
                    seen.append(event)
            except UsageError as exc:
                return seen, exc
            return seen, None

        seen, error = run(main())

        async def empty() -> None:
            async for _ in sup.astream("   "):
                pass

        with pytest.raises(UsageError, match="the request is empty"):
            run(empty())
    assert seen and not any(isinstance(e, RunResult) for e in seen)  # events came, then the error
    assert error is not None and "recursion limit (6" in str(error)


def test_cancelling_an_astream_stops_the_run_at_its_next_event_and_frees_the_worker(workspace: Path) -> None:
    request = "verify audit then show policy then verify audit then show policy"
    slow = SlowRedactor(None, 0.02)  # every text: each step takes a while
    with Supervisor(workspace, model="offline", user="alice", redactor=slow, settings=QUIET) as sup:

        async def main() -> RunResult:
            first = asyncio.Event()

            async def consume() -> None:
                async for _ in sup.astream(request, thread_id="cut"):
                    first.set()

            task = asyncio.create_task(consume())
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the worker is free again: the next call runs, within the time a stuck worker would exceed
            return await asyncio.wait_for(sup.aask("show policy", thread_id="after"), timeout=120)

        after = run(main())
        cut = sup.status("cut")
        events = [r["event"] for r in sup.audit.records() if r.get("thread_id") == "cut"]
        after_lines = thread_lines(sup, "after")
    assert after.status == "done"
    assert isinstance(cut, RunResult) and cut.status == "failed"  # stopped part-way, not finished
    assert events.count("tool_result") < 4  # the whole request makes four
    assert events[-1] == "interrupted"  # audited where it stopped
    # it stopped before the next call ran on the worker: no line of it after the next call's first
    assert max(thread_lines(sup, "cut")) < min(after_lines)


def test_cancelling_a_queued_aask_drops_it(workspace: Path) -> None:
    slow = SlowRedactor({"verify audit"}, 0.8)
    with Supervisor(workspace, model="offline", user="alice", redactor=slow, settings=QUIET) as sup:

        async def main() -> RunResult:
            running = asyncio.create_task(sup.aask("verify audit", thread_id="running"))
            queued = asyncio.create_task(sup.aask("show policy", thread_id="queued"))
            await asyncio.sleep(0.2)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            result = await running
            await sup.aask("verify audit then show policy", thread_id="later")  # after anything queued
            return result

        result = run(main())
        threads = sup.thread_ids()
        queued_lines = thread_lines(sup, "queued")
    assert result.status == "done"
    assert "queued" not in threads and not queued_lines
    assert {"running", "later"} <= set(threads)


def test_aapprove_and_areject_answer_a_paused_thread(workspace: Path, policy_file: Path) -> None:
    with (
        Supervisor(workspace, model="offline", user="alice") as alice,
        Supervisor(workspace, model="offline", user="release-manager") as manager,
    ):

        async def main() -> list[RunResult]:
            held = await alice.aask("show policy")
            own = await alice.aapprove(held.thread_id)
            approved = await manager.aapprove(held.thread_id, reason="fine")
            again = await alice.aask("show policy")
            rejected = await manager.areject(again.thread_id, reason="not today")
            return [held, own, approved, again, rejected]

        held, own, approved, again, rejected = run(main())

        async def no_reason() -> None:
            await manager.areject(again.thread_id, reason=" ")

        with pytest.raises(UsageError, match="needs a reason"):
            run(no_reason())
        records = list(alice.audit.records())
    assert (held.status, again.status) == ("awaiting_approval", "awaiting_approval")
    assert own.status == "refused"
    assert any(d.reason_code == "self_approval" for d in own.decisions)
    assert approved.status == "done" and [o.tool for o in approved.outputs] == ["show_policy"]
    assert rejected.status != "done" and not rejected.outputs
    answers = [(r["thread_id"], r.get("decision")) for r in records if r.get("event") == "approval"]
    assert answers == [(held.thread_id, "allow"), (again.thread_id, "deny")]


# --- rendering -----------------------------------------------------------------------------------


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every row of the Markdown tables in ``markdown``, parsed as GitHub-flavoured Markdown."""
    rows: list[list[str]] = []
    in_row = False
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type in ("tr_open", "tr_close"):
            in_row = token.type == "tr_open"
            rows += [[]] if in_row else []
        elif token.type == "inline" and in_row:
            rows[-1].append("".join(child.content for child in token.children or []))
    return rows


def _result(tmp_path: Path, outputs: list[ToolOutput] | None = None, **rest: Any) -> RunResult:
    return RunResult(
        status="done",
        thread_id="t-1",
        report=Report(plan="the plan", summary="all done"),
        outputs=outputs or [],
        audit_log=str(tmp_path / "ws" / "audit.jsonl"),
        **rest,
    )


def test_decisions_render_as_a_table_with_one_row_each(tmp_path: Path) -> None:
    decisions = [
        DecisionRecord(agent="data", action="scan_pii", decision="allow", reason_code="allowed", message="fine"),
        DecisionRecord(
            agent="deployment",
            action="deploy_model",
            decision="deny",
            reason_code="evaluation_failed",
            message="roc_auc 0.71 | below 0.85;\nask <EMAIL_ADDRESS>",
        ),
        DecisionRecord(
            agent="registry", action="promote_model", decision="needs_approval", reason_code="", message="held"
        ),
    ]
    result = _result(tmp_path, decisions=decisions)
    for markdown in (result.to_markdown(), result._repr_mimebundle_()["text/markdown"]):
        header, *rows = table_rows(markdown)
        assert header == ["agent", "action", "decision", "reason code", "message"]
        assert rows == [
            ["data", "scan_pii", "allow", "allowed", "fine"],
            [
                "deployment",
                "deploy_model",
                "deny",
                "evaluation_failed",
                "roc_auc 0.71 | below 0.85; ask <EMAIL_ADDRESS>",
            ],
            ["registry", "promote_model", "needs_approval", "", "held"],
        ]
        sections = [line for line in markdown.splitlines() if line.startswith("## ")]
        assert sections == [f"## {s}" for s in ("Plan", "Design", "Changes", "Verification", "Rollback", "Summary")] + [
            "## Decisions"
        ]
    assert table_rows(_result(tmp_path).to_markdown()) == []  # no decisions, no table


def _png(path: Path, colour: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.set_facecolor(colour)
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


def test_plots_the_outputs_name_are_inline_in_notebooks_and_paths_in_the_terminal(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    roc = _png(ws / "mlartifacts" / "abc123" / "artifacts" / "evaluation" / "plots" / "roc.png", "red")
    drift = _png(ws / "reports" / MODEL / "drift-1.png", "blue")
    outside = _png(tmp_path / "elsewhere" / "drift-2.png", "green")
    (ws / "reports" / MODEL / "latency-1.png").write_text("not a picture")
    outputs = [
        ToolOutput(
            agent="evaluation",
            tool="evaluate_model",
            outcome="ok",
            output={
                "model": MODEL,
                "version": 1,
                "evaluation_run": "abc123",
                "plots": ["evaluation/plots/roc.png", "evaluation/plots/missing.png"],
            },
        ),
        ToolOutput(
            agent="observability",
            tool="drift_report",
            outcome="ok",
            output={"model": MODEL, "plot": str(ws / "reports" / MODEL / "drift-1.png")},
        ),
        ToolOutput(
            agent="observability",
            tool="service_metrics",
            outcome="ok",
            output={"model": MODEL, "plot": str(ws / "reports" / MODEL / "latency-1.png")},
        ),
        ToolOutput(
            agent="observability",
            tool="drift_report",
            outcome="ok",
            output={"plot": str(tmp_path / "elsewhere" / "drift-2.png")},
        ),
        ToolOutput(agent="observability", tool="drift_report", outcome="error", output={"plot": str(ws / "x.png")}),
    ]
    result = _result(tmp_path, outputs=outputs)
    bundle = result._repr_mimebundle_()
    inline = bundle["text/markdown"]
    assert inline.count("data:image/png;base64,") == 2
    assert f"data:image/png;base64,{base64.b64encode(roc).decode()})" in inline
    assert f"data:image/png;base64,{base64.b64encode(drift).decode()})" in inline
    assert base64.b64encode(outside).decode() not in inline  # outside the workspace: named, never read
    assert "`evaluation/plots/missing.png` (not in this workspace's files" in inline
    assert "roc (evaluate_model, adult-income-classifier version 1)" in inline

    plain = result.to_markdown()
    assert bundle["text/plain"] == plain == result._repr_markdown_()
    assert "base64" not in plain
    assert str(ws / "mlartifacts" / "abc123" / "artifacts" / "evaluation" / "plots" / "roc.png") in plain
    assert str(ws / "reports" / MODEL / "drift-1.png") in plain
    assert "## Plots" in plain and "x.png" not in plain  # a failed call's output names nothing


def test_ipython_publishes_the_markdown_with_the_plots(tmp_path: Path) -> None:
    from IPython.core.formatters import DisplayFormatter

    ws = tmp_path / "ws"
    picture = _png(ws / "reports" / MODEL / "drift-1.png", "blue")
    result = _result(
        tmp_path,
        outputs=[
            ToolOutput(
                agent="observability",
                tool="drift_report",
                outcome="ok",
                output={"plot": str(ws / "reports" / MODEL / "drift-1.png")},
            )
        ],
    )
    data, _ = DisplayFormatter().format(result)
    assert set(data) == {"text/markdown", "text/plain"}
    assert base64.b64encode(picture).decode() in data["text/markdown"]
    assert data["text/plain"] == result.to_markdown()


def test_workspace_status_keeps_each_thread_on_one_row() -> None:
    status = WorkspaceStatus(
        workspace="/w",
        threads=[
            ThreadSummary(thread_id="t-1", status="done", requester="alice", request="deploy m | v2\nnow"),
            ThreadSummary(thread_id="t-2", status="failed", requester="bob", request="mail <EMAIL_ADDRESS>"),
        ],
        audit_intact=True,
        audit_lines=3,
        report=Report(summary="2 threads"),
    )
    header, *rows = table_rows(status.to_markdown())
    assert header == ["thread", "status", "requester", "request"]
    assert rows == [["t-1", "done", "alice", "deploy m | v2 now"], ["t-2", "failed", "bob", "mail <EMAIL_ADDRESS>"]]


# --- the quickstart notebook ------------------------------------------------------------------------


def _shown(cell: Any) -> str:
    """What a code cell displayed (its results, as Markdown where they have it, else plain text)."""
    return "\n".join(
        out["data"].get("text/markdown") or out["data"].get("text/plain", "")
        for out in cell.get("outputs", [])
        if "data" in out
    )


def _printed(cell: Any) -> str:
    """What a code cell printed on stdout."""
    return "".join(
        out["text"] for out in cell.get("outputs", []) if out["output_type"] == "stream" and out["name"] == "stdout"
    )


def _cell(nb: Any, source: str) -> Any:
    [cell] = [c for c in nb.cells if c.cell_type == "code" and source in c.source]
    return cell


def _still_running(marker: bytes, wait: float = 15) -> list[int]:
    """The processes whose environment holds ``marker`` (the kernel and every server it started inherit it),
    once the kernel has had ``wait`` seconds to exit."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_quickstart_notebook_runs_headless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook, run as Jupyter runs it (cwd: its folder), from a copy of examples/; every cell must pass."""
    examples = tmp_path / "examples"
    examples.mkdir()
    for name in ("quickstart.ipynb", "adult-income.yaml"):
        shutil.copy(REPO / "examples" / name, examples / name)
    shutil.copytree(REPO / "examples" / "data", examples / "data")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the notebook's tempfile.mkdtemp puts its workspace
    # this environment's kernel spec before any other named python3 (a user-wide one may point elsewhere)
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))

    nb = nbformat.read(examples / "quickstart.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, startup_timeout=120, resources={"metadata": {"path": str(examples)}}
    )
    try:
        client.execute()  # raises CellExecutionError naming the cell on the first error; then ends the kernel
        # read before the safety net below: the notebook's last cell must have stopped every server itself
        left = _still_running(f"TMPDIR={scratch}".encode())
    finally:
        for root in scratch.glob("mlops-quickstart-*/workspace"):
            LocalBackend.for_workspace(root).down()
        nbformat.write(nb, tmp_path / "executed.ipynb")  # kept with the test's files, to look at
    assert left == []
    [ws] = list(scratch.glob("mlops-quickstart-*/workspace"))

    trained = _shown(_cell(nb, "sup.run_pipeline(spec_file"))
    assert trained.startswith("**done**")
    assert trained.count("data:image/png;base64,") == 5  # confusion matrix, ROC, calibration, two group plots
    assert "| agent | action | decision | reason code | message |" in trained
    assert "| experimentation | `train_model` | allow | `allowed` |" in trained

    assert _shown(_cell(nb, "held = await sup.aask")).startswith("**awaiting_approval**")
    evidence = _shown(_cell(nb, "approver.approval_evidence(held.thread_id)"))
    assert "| roc_auc |" in evidence and "may approve: **sam**" in evidence
    assert _printed(_cell(nb, "refused = await sup.aapprove")).startswith("refused · Refused:")
    approval = _printed(_cell(nb, "approved = await approver.aapprove"))
    assert approval.startswith("status: done; champion: version 1; router: http://127.0.0.1:")
    assert champion_of(ws, MODEL) == 1
    signed = [r for r in AuditLog(ws / "audit.jsonl").records() if r.get("event") == "approval"]
    assert [(r["approval_signed"]["signer"], r["request_signed"]["signer"]) for r in signed] == [("sam", "dana")]

    canary = _cell(nb, "async for event in sup.astream(request)")
    assert "tool_finished   deployment deploy_model ok\n" in _printed(canary)
    assert _printed(canary).endswith("\ndone\n")
    assert "v1 90% up, v2 10% up" in _shown(canary)

    watched = _shown(_cell(nb, 'await sup.aask(f"metrics {MODEL} then drift {MODEL}")'))
    assert watched.startswith("**done**")
    plots = re.sub(r"\(data:image/png;base64,[^)]*\)", "(...)", watched.partition("## Plots")[2])
    assert watched.count("data:image/png;base64,") == 2, plots  # latency and drift
    assert _printed(_cell(nb, 'observed["drift_report"]["alerts"]')).startswith("age drifted")

    assert verify_audit_log(ws / "audit.jsonl").ok
    assert _printed(_cell(nb, "sup.down()")).startswith("stopped 3 processes")  # a router and two model servers
