"""The ``mlops-supervisor`` command line (typer + rich).

Exit codes: 0 done, 1 internal error, 2 bad input or usage, 3 refused by a gate,
4 paused awaiting approval. Every reporting command takes ``--json`` and then prints
exactly one JSON object on stdout.
"""

from __future__ import annotations

import enum
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markdown import Markdown

from mlops_supervisor.policies.errors import GateRefusedError, MlopsSupervisorError, UsageError

if TYPE_CHECKING:
    from mlops_supervisor._api import Supervisor

app = typer.Typer(
    name="mlops-supervisor",
    help="A governed LLM multi-agent supervisor for the ML lifecycle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
audit_app = typer.Typer(help="Inspect and verify the hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
spec_app = typer.Typer(help="Pipeline spec files: their JSON Schema and a check.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")

out = Console()
err = Console(stderr=True)


class Stage(enum.StrEnum):
    """Pipeline stages, in order."""

    data = "data"
    train = "train"
    evaluate = "evaluate"
    register = "register"
    deploy = "deploy"
    monitor = "monitor"


class _Options:
    workspace: Path | None = None
    user: str | None = None
    policy: Path | None = None


OPTIONS = _Options()

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object instead of the report")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="offline, scripted:PATH or openai:MODEL (env MLOPS_MODEL)")
]
ThreadOpt = Annotated[str | None, typer.Option("--thread", help="thread id to continue or create")]
AsOpt = Annotated[str | None, typer.Option("--as", help="act as this user (overrides the global --as)")]


@app.callback()
def _global(
    workspace: Annotated[
        Path | None,
        typer.Option("--workspace", envvar="MLOPS_WORKSPACE", help="workspace directory [default: ./.mlops]"),
    ] = None,
    user: Annotated[
        str | None, typer.Option("--as", envvar="MLOPS_USER", help="who is acting [default: OS user]")
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", envvar="MLOPS_POLICY", help="policy file [default: <workspace>/policy.yaml or built-in]"
        ),
    ] = None,
) -> None:
    """Global options shared by every command."""
    OPTIONS.workspace, OPTIONS.user, OPTIONS.policy = workspace, user, policy


def _supervisor(model: str | None = None, user: str | None = None) -> Supervisor:
    from mlops_supervisor._api import Supervisor

    return Supervisor(OPTIONS.workspace, model=model, user=user or OPTIONS.user, policy=OPTIONS.policy)


def _emit(result: Any, as_json: bool) -> NoReturn:
    if as_json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
    else:
        out.print(Markdown(result.to_markdown()))
        pending = getattr(result, "pending_approval", None)
        if pending is not None:
            err.print(f"[yellow]awaiting approval[/]: {pending.approve_command}")
    raise typer.Exit(result.exit_code)


@app.command()
def ask(
    request: Annotated[str, typer.Argument(help="what to do, e.g. 'help' or 'promote churn version 3 to production'")],
    model: ModelOpt = None,
    thread: ThreadOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Run one request and print its report; no prompts."""
    with _supervisor(model) as sup:
        result = sup.ask(request, thread_id=thread)
    _emit(result, as_json)


@app.command()
def chat(model: ModelOpt = None, thread: ThreadOpt = None) -> None:
    """Talk to the supervisor; 'exit' or Ctrl-D ends the session."""
    import uuid

    from mlops_supervisor._results import RunResult

    thread_id = thread or f"t-{uuid.uuid4().hex[:12]}"
    with _supervisor(model) as sup:
        err.print(f"thread [bold]{thread_id}[/] · model {sup.model_spec} · 'help' lists commands, 'exit' leaves")
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                break
            if line.lower() in {"exit", "quit"}:
                break
            if not line:
                continue
            try:
                for event in sup.stream(line, thread_id=thread_id):
                    if isinstance(event, RunResult):
                        out.print(Markdown(event.report.summary))
                        if event.pending_approval is not None:
                            err.print(f"[yellow]awaiting approval[/]: {event.pending_approval.approve_command}")
                    elif "route" in event:
                        err.print(f"[dim]→ {event['route']['agent']}: {event['route']['task']}[/]")
            except UsageError as exc:
                sys.stderr.write(f"error: {exc}\n")


@app.command()
def approve(
    thread: Annotated[str, typer.Argument(help="thread id awaiting approval")],
    reason: Annotated[str, typer.Option("--reason", help="why you approve")] = "",
    user: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve the action a paused thread waits on, and let it finish."""
    with _supervisor(user=user) as sup:
        result = sup.approve(thread, reason=reason)
    _emit(result, as_json)


@app.command()
def reject(
    thread: Annotated[str, typer.Argument(help="thread id awaiting approval")],
    reason: Annotated[str, typer.Option("--reason", help="why you reject (recorded)")],
    user: AsOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject the action a paused thread waits on; the reason is recorded."""
    with _supervisor(user=user) as sup:
        result = sup.reject(thread, reason=reason)
    _emit(result, as_json)


@app.command()
def resume(thread: Annotated[str, typer.Argument(help="thread id")], as_json: JsonFlag = False) -> None:
    """Continue a thread that stopped part-way."""
    with _supervisor() as sup:
        result = sup.resume(thread)
    _emit(result, as_json)


@app.command()
def status(
    thread: Annotated[str | None, typer.Argument(help="one thread; omit for the whole workspace")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Threads, pending approvals and the audit chain's state."""
    with _supervisor() as sup:
        result = sup.status(thread)
    _emit(result, as_json)


@app.command()
def rollback(
    model_name: Annotated[str, typer.Argument(metavar="MODEL", help="registered model name")], as_json: JsonFlag = False
) -> None:
    """Restore the last known-good version of MODEL (traffic and alias)."""
    with _supervisor("offline") as sup:
        result = sup.ask(f"rollback {model_name}")
    _emit(result, as_json)


def _backend_models(model_name: str | None) -> tuple[Any, list[str]]:
    """The workspace's serving backend and the models a command acts on (all, or the one named)."""
    from mlops_supervisor._settings import Settings
    from mlops_supervisor.tools.serving import LocalBackend

    root = _workspace_path()
    backend = LocalBackend.for_workspace(root, Settings().mlflow_tracking_uri)
    known = backend.models()
    if model_name is not None and model_name not in known:
        raise UsageError(
            f"model {model_name!r} has no serving state in {root}; served here: {', '.join(known) or 'none'}"
        )
    return backend, [model_name] if model_name else known


@app.command()
def down(
    model_name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="one model; omit for all")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop the model servers and routers this workspace runs."""
    backend, models = _backend_models(model_name)
    stopped = [backend.stop(m) for m in models]
    if as_json:
        sys.stdout.write(json.dumps({"status": "done", "stopped": stopped}) + "\n")
    else:
        out.print(f"stopped {sum(s['stopped'] for s in stopped)} processes of {len(stopped)} model(s)")


@app.command()
def up(
    model_name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="one model; omit for all")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Restart the model servers and routers of this workspace that died, as they were recorded."""
    backend, models = _backend_models(model_name)
    restored = [backend.restore(m) for m in models]
    if as_json:
        sys.stdout.write(json.dumps({"status": "done", "restored": restored}) + "\n")
    else:
        for r in restored:
            router = r["router"] or {}
            out.print(f"{r['model']}: {router.get('url')}; restarted: {', '.join(r['restarted']) or 'nothing'}")


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (YAML); `mlops-supervisor spec schema` shows its form")],
    stop_after: Annotated[Stage, typer.Option("--stop-after", help="last stage to run")] = Stage.monitor,
    as_json: JsonFlag = False,
) -> None:
    """Run the pipeline of SPEC, stage by stage, up to --stop-after."""
    from mlops_supervisor._api import Supervisor, resolve_policy
    from mlops_supervisor._pipeline import preflight
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace

    # Check the spec against the policy before the workspace exists: bad input leaves nothing.
    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    preflight(spec, resolve_policy(workspace, OPTIONS.policy, settings))
    progress = None if as_json else _rich_progress
    with Supervisor(
        OPTIONS.workspace, model="offline", user=OPTIONS.user, policy=OPTIONS.policy, progress=progress
    ) as sup:
        result = sup.run_pipeline(spec, stop_after=stop_after.value)
    _emit(result, as_json)


@contextmanager
def _rich_progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[note]}"),
        console=err,
    ) as bar:
        task = bar.add_task(description, total=total, note="")
        yield lambda note: bar.update(task, advance=1, note=note)


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of a pipeline spec."""
    from mlops_supervisor.tools import spec_json_schema

    sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")


@spec_app.command("check")
def spec_check(spec: Annotated[Path, typer.Argument(help="pipeline spec (YAML)")], as_json: JsonFlag = False) -> None:
    """Validate SPEC against the schema and the policy without running anything."""
    from mlops_supervisor._api import resolve_policy
    from mlops_supervisor._pipeline import preflight
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace

    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    loaded = preflight(spec, resolve_policy(workspace, OPTIONS.policy, settings))
    if as_json:
        sys.stdout.write(
            json.dumps({"status": "done", "spec": str(loaded.path), "sha256": loaded.digest, "name": loaded.spec.name})
            + "\n"
        )
    else:
        out.print(f"{loaded.path}: valid pipeline spec {loaded.spec.name!r} (sha256 {loaded.digest[:12]})")


@app.command()
def demo(
    as_json: JsonFlag = False,
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="leave the model servers running")] = False,
) -> None:
    """Run the whole governed lifecycle on the embedded default, offline, with real servers."""
    from mlops_supervisor._demo import run_demo

    result = run_demo(
        OPTIONS.workspace or Path(".mlops"),
        requester=OPTIONS.user,
        console=None if as_json else err,
        keep_serving=keep_serving,
    )
    _emit(result, as_json)


@app.command("eval")
def eval_(
    scenario: Annotated[list[str] | None, typer.Option("--scenario", help="run only these scenarios")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the built-in agent eval scenarios (scripted models, no network)."""
    from mlops_supervisor.evals import run_scenarios

    result = run_scenarios(OPTIONS.workspace or Path(".mlops"), only=scenario)
    _emit(result, as_json)


@app.command()
def graph() -> None:
    """Print the supervisor graph as Mermaid."""
    with _supervisor("offline") as sup:
        sys.stdout.write(sup.mermaid() + "\n")


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Exit 0 when the chain is intact, 1 naming the first bad line otherwise."""
    from mlops_supervisor.policies.audit import verify_audit_log

    path = _workspace_path() / "audit.jsonl"
    check = verify_audit_log(path)
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "status": "done" if check.ok else "failed",
                    "path": str(path),
                    "intact": check.ok,
                    "lines": check.lines,
                    "bad_line": check.bad_line,
                    "problem": check.problem,
                }
            )
            + "\n"
        )
    elif check.ok:
        out.print(f"audit chain intact: {check.lines} lines in {path}")
    else:
        err.print(f"[red]audit chain broken at line {check.bad_line}[/] of {path}: {check.problem}")
    raise typer.Exit(0 if check.ok else 1)


@audit_app.command("show")
def audit_show(
    thread: Annotated[str | None, typer.Option("--thread", help="only this thread")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="last N events")] = 50,
    as_json: JsonFlag = False,
) -> None:
    """Print recent audit events."""
    from mlops_supervisor.policies.audit import AuditLog

    records = [
        r
        for r in AuditLog(_workspace_path() / "audit.jsonl").records()
        if thread is None or r.get("thread_id") == thread
    ][-limit:]
    if as_json:
        sys.stdout.write(json.dumps({"status": "done", "events": records}) + "\n")
        return
    from rich.table import Table

    table = Table("seq", "time", "event", "thread", "detail")
    for r in records:
        detail = " ".join(
            f"{k}={r[k]}"
            for k in ("agent", "action", "decision", "reason_code", "next", "status", "approver", "outcome")
            if r.get(k) is not None
        )
        table.add_row(
            str(r.get("seq")), str(r.get("ts", ""))[:19], str(r.get("event")), str(r.get("thread_id", "")), detail
        )
    out.print(table)


def _workspace_path() -> Path:
    from mlops_supervisor._settings import Settings

    return (OPTIONS.workspace or Settings().workspace).expanduser().absolute()


def main() -> None:
    """Entry point: map our errors to exit codes with one readable line."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    # MLflow's INFO lines (schema migrations, run links) would drown the report on stderr.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
    # Everything the command writes (and the servers it starts) is the user's alone: checkpoints,
    # logs, the MLflow store and artifacts, data sets. Files 0600, folders 0700.
    os.umask(0o077)
    try:
        app()  # standalone: click prints its own usage errors and exits 2
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    except GateRefusedError as exc:
        sys.stderr.write(f"refused: {exc}\n")
        sys.exit(3)
    except MlopsSupervisorError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(130)
