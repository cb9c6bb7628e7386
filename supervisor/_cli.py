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
    from mlops_supervisor.policies.audit import AuditStore

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
keys_app = typer.Typer(help="Ed25519 keys: people are keys, names are not proof.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
policy_app = typer.Typer(
    help="The workspace policy in force: show it, change it by signed approval.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

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
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--key", help="your Ed25519 private key [default: MLOPS_KEY, else <config>/mlops-supervisor/keys/NAME]"
    ),
]


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
    """Run one request and print its report; no prompts. A lifecycle request lacking inputs exits 2 listing them."""
    from mlops_supervisor._requirements import MissingInputsError, is_lifecycle

    if is_lifecycle(request):
        _check_lifecycle_first(request, as_json)
    with _supervisor(model) as sup:
        try:
            result = sup.ask(request, thread_id=thread)
        except MissingInputsError as exc:
            _emit_missing(exc, as_json)
    _emit(result, as_json)


def _check_lifecycle_first(request: str, as_json: bool) -> None:
    """A lifecycle request's inputs checked before the workspace exists: a request that lacks some exits 2
    and leaves nothing, not even an empty workspace."""
    from mlops_supervisor._api import resolve_policy
    from mlops_supervisor._pipeline import preflight
    from mlops_supervisor._requirements import MissingInputsError, check_lifecycle, parse_lifecycle
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace
    from mlops_supervisor.policies.pii import PresidioRedactor

    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    policy = resolve_policy(workspace, OPTIONS.policy, settings)
    parsed = parse_lifecycle(PresidioRedactor().redact_text(request))
    if parsed is None:
        return
    check = check_lifecycle(
        parsed,
        policy=policy,
        requester=OPTIONS.user or settings.user,
        tracking_uri=settings.mlflow_tracking_uri or "the workspace's embedded store",
        loaded=preflight(parsed.spec, policy) if parsed.spec is not None else None,
    )
    if check.missing:
        _emit_missing(MissingInputsError(check.missing), as_json)


def _emit_missing(exc: Any, as_json: bool) -> NoReturn:
    """Exit 2 with what a lifecycle request lacks: one JSON object with ``--json``, else one line each on stderr."""
    if not as_json:
        raise exc
    missing = [m.model_dump() for m in exc.missing]
    sys.stdout.write(json.dumps({"status": "invalid_input", "missing": missing}) + "\n")
    raise typer.Exit(2)


@app.command()
def chat(model: ModelOpt = None, thread: ThreadOpt = None) -> None:
    """Talk to the supervisor: the work streams as it happens, approvals are answered inline (/help).

    /quit, 'exit' or Ctrl-D leaves; Ctrl-C stops the turn in progress; --thread ID comes back to a thread.
    """
    from mlops_supervisor._api import Supervisor
    from mlops_supervisor._chat import ChatSession

    with Supervisor(
        OPTIONS.workspace, model=model, user=OPTIONS.user, policy=OPTIONS.policy, progress=_rich_progress
    ) as sup:
        code = ChatSession(sup, console=out, work=err, thread_id=thread).run()
    raise typer.Exit(code)


@app.command()
def approve(
    thread: Annotated[str, typer.Argument(help="thread id awaiting approval")],
    reason: Annotated[str, typer.Option("--reason", help="why you approve")] = "",
    user: AsOpt = None,
    key: KeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve the action a paused thread waits on, signed with your key, and let it finish."""
    with _supervisor(user=user) as sup:
        result = sup.approve(thread, reason=reason, key=key)
    _emit(result, as_json)


@app.command()
def reject(
    thread: Annotated[str, typer.Argument(help="thread id awaiting approval")],
    reason: Annotated[str, typer.Option("--reason", help="why you reject (recorded)")],
    user: AsOpt = None,
    key: KeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject the action a paused thread waits on, signed with your key; the reason is recorded."""
    with _supervisor(user=user) as sup:
        result = sup.reject(thread, reason=reason, key=key)
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
    """Threads, pending approvals and the audit chain's state; for a paused thread, the evidence to approve."""
    with _supervisor() as sup:
        result = sup.status(thread)
        evidence = (
            sup.approval_evidence(thread)
            if thread is not None and not as_json and result.status == "awaiting_approval"
            else None
        )
    if evidence is not None:
        out.print(Markdown(evidence.to_markdown()))
    _emit(result, as_json)


@app.command()
def rollback(
    model_name: Annotated[str, typer.Argument(metavar="MODEL", help="registered model name")], as_json: JsonFlag = False
) -> None:
    """Restore the last known-good version of MODEL (traffic and alias)."""
    with _supervisor("offline") as sup:
        result = sup.ask(f"rollback {model_name}")
    _emit(result, as_json)


class OutputFormat(enum.StrEnum):
    yaml = "yaml"
    json = "json"


@app.command()
def deploy(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (YAML) whose model is deployed")],
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="model version [default: the newest registered]")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would be applied to the cluster; change nothing")
    ] = False,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="format of --dry-run's objects")] = (
        OutputFormat.yaml
    ),
    as_json: JsonFlag = False,
) -> None:
    """Deploy a version of SPEC's model through the gates (as `ask "deploy MODEL version N"`); with --dry-run,
    print the Kubernetes objects its serving target would apply (validated), touching no cluster."""
    import yaml

    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace
    from mlops_supervisor.tools import load_spec
    from mlops_supervisor.tools.core import default_tracking_uri
    from mlops_supervisor.tools.serving import preview

    loaded = load_spec(spec)
    model = loaded.spec.model.name
    if not dry_run:
        if version is None:
            raise UsageError(f"name the version to deploy: `mlops-supervisor deploy {spec} --version N`")
        with _supervisor("offline") as sup:
            result = sup.ask(f"deploy {model} version {version}")
        _emit(result, as_json)
    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    store = settings.mlflow_tracking_uri or default_tracking_uri(workspace.root)
    has_store = settings.mlflow_tracking_uri is not None or (workspace.root / "mlflow.db").exists()
    shown = preview(loaded.spec, store_uri=store if has_store else None, tracking_uri=store, version=version)
    for note in shown.notes:
        err.print(f"[yellow]note[/]: {note}")
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(shown.objects, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(shown.objects, sort_keys=False))


def _duration(text: str) -> float:
    """Seconds in ``text`` (``90``, ``30s``, ``5m``, ``1h``, ``1d``); ``UsageError`` naming it otherwise."""
    units = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = text.strip().rstrip("smhd"), text.strip()[len(text.strip().rstrip("smhd")) :]
    try:
        seconds = float(number) * units[unit]
    except (ValueError, KeyError):
        seconds = float("nan")
    if not seconds >= 1 or seconds == float("inf"):
        raise UsageError(f"--every {text!r} is not a duration of at least 1 s; write e.g. 90, 30s, 5m, 1h or 1d")
    return seconds


@app.command()
def monitor(
    model_name: Annotated[
        str | None, typer.Argument(metavar="[MODEL]", help="one served model; omit for every model served here")
    ] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="repeat every DURATION (90, 30s, 5m, 1h) until Ctrl-C or SIGTERM; omit: once"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run every monitoring check once (for cron, a systemd timer or a CronJob) or on a schedule.

    Each model's checks are one governed, read-only request (`monitor MODEL`) with its report;
    alerts go to the model's owner. With --json, one JSON object per model and run, one per line.
    """
    import signal
    import threading

    from mlops_supervisor.tools.serving._backend import STAGING_SUFFIX

    try:
        interval = _duration(every) if every is not None else None
    except UsageError as exc:
        err.print(f"[red]error[/]: {exc}")
        raise typer.Exit(2) from None
    stop = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second signal: stop now
            raise KeyboardInterrupt
        stop.set()
        err.print(f"[yellow]{signal.Signals(signum).name}[/]: stopping after the check in progress")

    if interval is not None:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    worst = 0
    with _supervisor("offline") as sup:
        while True:
            models = [model_name] if model_name else [m for m in sup.served_models() if not m.endswith(STAGING_SUFFIX)]
            if not models:
                err.print(f"[red]error[/]: nothing is served in {sup.workspace.root}; deploy a model first")
                raise typer.Exit(2)
            for name in models:
                result = sup.ask(f"monitor {name}")
                worst = max(worst, result.exit_code)
                if as_json:
                    sys.stdout.write(json.dumps(result.model_dump(mode="json")) + "\n")
                    sys.stdout.flush()
                else:
                    out.print(Markdown(result.to_markdown()))
                if stop.is_set():
                    break
            if interval is None or stop.wait(interval):
                break
    raise typer.Exit(worst if interval is None else 0)


@contextmanager
def _endpoint_operation() -> Iterator[Supervisor]:
    """A supervisor whose direct calls are recorded as coming from the command line."""
    from mlops_supervisor.tools.core import invoked_from

    with _supervisor("offline") as sup, invoked_from("cli"):
        yield sup


@app.command()
def down(
    model_name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="one model; omit for all")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stop the model servers and routers this workspace runs (decided by the policy and audited)."""
    with _endpoint_operation() as sup:
        stopped = sup.down(model_name)
    if as_json:
        sys.stdout.write(json.dumps({"status": "done", "stopped": stopped}) + "\n")
    else:
        out.print(f"stopped {sum(s['stopped'] for s in stopped)} processes of {len(stopped)} model(s)")


@app.command()
def up(
    model_name: Annotated[str | None, typer.Argument(metavar="[MODEL]", help="one model; omit for all")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Restart the model servers and routers of this workspace that died, as recorded (decided and audited)."""
    with _endpoint_operation() as sup:
        restored = sup.up(model_name)
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
    """Run the pipeline of SPEC, stage by stage, up to --stop-after; exits 2 listing any input the stages need
    that neither the spec, the policy nor the settings give."""
    from mlops_supervisor._api import Supervisor, resolve_policy
    from mlops_supervisor._pipeline import preflight
    from mlops_supervisor._requirements import LifecycleRequest, MissingInputsError, check_lifecycle
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace

    # Check the spec and its inputs against the policy before the workspace exists: bad input leaves nothing.
    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    policy = resolve_policy(workspace, OPTIONS.policy, settings)
    loaded = preflight(spec, policy)
    check = check_lifecycle(
        LifecycleRequest(spec=str(loaded.path)),
        policy=policy,
        requester=OPTIONS.user or settings.user,
        tracking_uri=settings.mlflow_tracking_uri or "the workspace's embedded store",
        through=stop_after.value,
        loaded=loaded,
    )
    if check.missing:
        _emit_missing(MissingInputsError(check.missing), as_json)
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


def _redactor() -> Any:
    """The redactor ``redact`` uses: Presidio's recognizers plus the key and token patterns."""
    from mlops_supervisor.policies.pii import PresidioRedactor

    return PresidioRedactor()


def _read_text(file: str) -> str:
    """The whole of ``file`` (``-``: standard input) as UTF-8; ``UsageError`` naming the file otherwise."""
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text("utf-8")
    except FileNotFoundError:
        raise UsageError(f"file {file} does not exist; give a readable text file, or - for standard input") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"file {file} cannot be read as UTF-8 text ({exc}); give a text file, or - for stdin"
        ) from None


def _json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if isinstance(value, dict):
        return "an object without a string field 'text'"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def _jsonl_documents(text: str, source: str) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line; ``UsageError`` naming the first line that is not a document.

    Every line is checked before anything is printed, so bad input prints nothing on stdout.
    """
    allowed = 'each line must be a JSON string or a JSON object with a string field "text"'
    documents = []
    # split on newlines only: a JSON string may hold U+2028, which str.splitlines would split on
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"{source} line {number} is not JSON ({exc}); {allowed}") from None
        if isinstance(value, str):
            documents.append((number, value))
        elif isinstance(value, dict) and isinstance(value.get("text"), str):
            documents.append((number, value["text"]))
        else:
            raise UsageError(f"{source} line {number} is {_json_kind(value)}; {allowed}")
    return documents


def _spans(redactor: Any, text: str) -> list[dict[str, Any]]:
    """The entities ``redactor`` finds in ``text`` as JSON records, each span once."""
    spans: dict[tuple[int, int, str], dict[str, Any]] = {}
    for f in redactor.findings(text):
        key = (f.start, f.end, f.entity)
        spans.setdefault(key, {"start": f.start, "end": f.end, "entity": f.entity, "score": f.score})
    return list(spans.values())


@app.command()
def feedback(
    model_name: Annotated[str, typer.Argument(metavar="MODEL", help="the served model the labels are for")],
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV or Parquet: request_id (from the x-request-id header), row (optional), label (or the "
            "target's name) and the sensitive attributes the model's feedback contract names",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Store labels that arrived after the predictions (the data agent's record_feedback, decided and audited).

    Every row is checked first; a file with any bad row is refused whole (exit 2), naming the rows.
    """
    from mlops_supervisor.policies import InvalidInputError

    with _endpoint_operation() as sup:
        try:
            stored = sup.call("record_feedback", model=model_name, path=str(file.expanduser().absolute()))
        except InvalidInputError as exc:
            if not as_json:
                raise
            sys.stdout.write(json.dumps({"status": "invalid_input", "reason_code": exc.reason_code, "error": str(exc)}))
            sys.stdout.write("\n")
            raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps({"status": "done", **stored}) + "\n")
    else:
        out.print(f"{stored['accepted']} label(s) for {stored['model']} stored as batch {stored['batch']}")


@app.command()
def redact(
    file: Annotated[str, typer.Argument(metavar="[FILE|-]", help="a UTF-8 text file; - or nothing reads stdin")] = "-",
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object: status, spans (start, end, entity, score), redacted")
    ] = False,
    jsonl: Annotated[
        bool,
        typer.Option(
            "--jsonl",
            help='one document per line (a JSON string, or an object with a string "text"); '
            "print one JSON object per line with its line, spans and redacted text",
        ),
    ] = False,
) -> None:
    """Print FILE (or stdin) with secrets and personal data replaced by <ENTITY> placeholders."""
    if as_json and jsonl:
        raise UsageError("--json and --jsonl cannot be combined: --jsonl already prints one JSON object per line")
    text = _read_text(file)
    source = "standard input" if file == "-" else file
    documents = _jsonl_documents(text, source) if jsonl else []
    redactor = _redactor()
    if jsonl:
        for number, document in documents:
            record = {"line": number, "spans": _spans(redactor, document), "redacted": redactor.redact_text(document)}
            sys.stdout.write(json.dumps(record) + "\n")
    elif as_json:
        record = {"status": "done", "spans": _spans(redactor, text), "redacted": redactor.redact_text(text)}
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        sys.stdout.write(redactor.redact_text(text))


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the JSON Schema of a pipeline spec."""
    from mlops_supervisor.tools import spec_json_schema

    sys.stdout.write(json.dumps(spec_json_schema(), indent=2) + "\n")


@spec_app.command("check")
def spec_check(spec: Annotated[Path, typer.Argument(help="pipeline spec (YAML)")], as_json: JsonFlag = False) -> None:
    """Validate SPEC against the schema and the policy without running anything."""
    from mlops_supervisor._pipeline import preflight
    from mlops_supervisor._policy_store import resolve_policy  # not _api's copy: that imports the whole graph
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


@app.command("alert-rules")
def alert_rules(
    spec: Annotated[Path, typer.Argument(help="pipeline spec (YAML)")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder the three files are written to")] = Path("."),
    target: Annotated[
        str | None,
        typer.Option(
            "--target", help="HOST:PORT Prometheus scrapes [default: the model's router here, else localhost:8000]"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Render Prometheus alerting rules, an Alertmanager route and a scrape config for SPEC's model, checked
    with promtool and amtool where installed: prometheus-rules.yml, alertmanager.yml, prometheus-scrape.yml."""
    from urllib.parse import urlsplit

    from mlops_supervisor._policy_store import resolve_policy  # not _api's copy: that imports the whole graph
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._workspace import Workspace
    from mlops_supervisor.tools import load_spec
    from mlops_supervisor.tools.monitoring import write_alert_files
    from mlops_supervisor.tools.serving import LocalBackend

    settings = Settings()
    workspace = Workspace.open(OPTIONS.workspace or settings.workspace, create=False)
    loaded = load_spec(spec)
    policy = resolve_policy(workspace, OPTIONS.policy, settings)
    if target is None:
        model = loaded.spec.model.name
        backend = LocalBackend.for_workspace(workspace.root, settings.mlflow_tracking_uri)
        router = backend.status(model)["router"] if model in backend.models() else None
        url = urlsplit(router["url"]) if router else None
        target = f"{url.hostname}:{url.port}" if url and url.hostname and url.port else "localhost:8000"
    result = write_alert_files(loaded, policy, out_dir, target=target)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    for path in result["files"]:
        out.print(f"wrote {path}")
    for name, said in result["checks"].items():
        out.print(f"{name}: {said}")
    out.print(
        f"{result['model']}: alerts to {result['route']} (from the {result['route_source']}); "
        f"Prometheus scrapes {result['target']}"
    )


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
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            help="scenario files or folders of *.yaml (default: the built-in suite); "
            "`eval schema` prints the scenario JSON Schema",
            metavar="PATH",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="offline or openai:MODEL, for scenarios whose model is offline or live"),
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="run each scenario N times")] = 1,
    workers: Annotated[int, typer.Option("--workers", help="scenarios run in N processes at once")] = 1,
    junit: Annotated[Path | None, typer.Option("--junit", help="write JUnit XML to FILE")] = None,
    json_file: Annotated[
        str | None, typer.Option("--json", help="write the JSON report to FILE (- for stdout)")
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", help="an earlier --json report: exit 1 when a scenario got worse")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tags", help="run only scenarios with one of these tags (repeat or a,b)")
    ] = None,
    k: Annotated[int | None, typer.Option("--k", help="k of pass^k (default: --trials)")] = None,
    min_pass_rate: Annotated[
        float | None,
        typer.Option("--min-pass-rate", help="exit 1 when pass^k is below this (0 to 1), whatever the severities"),
    ] = None,
) -> None:
    """Run agent eval scenarios: exit 0 when every blocker held, 1 when one failed or got worse than the baseline."""
    from mlops_supervisor.evals import _report

    if paths == ["schema"]:
        options = (model, junit, json_file, baseline, tags, k, min_pass_rate)
        if any(value is not None for value in options) or trials != 1 or workers != 1:
            raise UsageError("`eval schema` takes no options; it prints the scenario JSON Schema")
        from mlops_supervisor.evals._format import scenario_json_schema

        sys.stdout.write(json.dumps(scenario_json_schema(), indent=2) + "\n")
        return
    plan = _report.check_eval_options(
        paths=[Path(p) for p in paths or []],
        trials=trials,
        workers=workers,
        k=k,
        junit=junit,
        json_file=None if json_file in (None, "-") else Path(json_file),
        baseline=baseline,
    )
    if min_pass_rate is not None and not 0 <= min_pass_rate <= 1:
        raise UsageError(f"--min-pass-rate must be between 0 and 1, got {min_pass_rate:g}")
    from mlops_supervisor.evals._runner import run_eval

    wanted = [t.strip() for group in tags or [] for t in group.split(",") if t.strip()] or None
    report = run_eval(
        plan.paths or None, model=model, trials=trials, workers=workers, tags=wanted, progress=_rich_progress
    )
    if not report.results:
        raise UsageError(f"no scenario matched the tags {', '.join(wanted or [])}")
    regressions = _report.compare_to_baseline(report, plan.baseline) if plan.baseline is not None else []
    command = ["mlops-supervisor", *sys.argv[1:]]
    document = _report.json_report(
        report, k=plan.k, command=command, regressions=regressions, min_pass_hat_k=min_pass_rate
    )
    from mlops_supervisor.tools.core import write_atomic

    if junit is not None:
        write_atomic(junit, _report.junit_xml(report, k=plan.k))
    if plan.json_file is not None:
        write_atomic(plan.json_file, json.dumps(document, indent=2) + "\n")
    _report.print_summary(report, err if json_file == "-" else out, k=plan.k, regressions=regressions)
    if document["threshold_missed"]:
        err.print(f"[red]pass^{plan.k} = {document['pass_hat_k']:.3f}, below --min-pass-rate {min_pass_rate:g}[/]")
    if json_file == "-":
        sys.stdout.write(json.dumps(document) + "\n")
    raise typer.Exit(document["exit_code"])


@app.command()
def graph() -> None:
    """Print the supervisor graph as Mermaid."""
    with _supervisor("offline") as sup:
        sys.stdout.write(sup.mermaid() + "\n")


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Exit 0 when the chain is intact, 1 naming the first bad line otherwise."""
    with _audit_store() as audit:
        check = audit.verify()
    path = audit.location
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
    with _audit_store() as audit:
        records = [r for r in audit.records() if thread is None or r.get("thread_id") == thread][-limit:]
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


@keys_app.command("init")
def keys_init(
    name: Annotated[str, typer.Argument(help="the person the key is for (the name they act as with --as)")],
    key_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="where to keep it [default: MLOPS_KEY_DIR or <config>/mlops-supervisor/keys]"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make an Ed25519 key pair for NAME (private key 0600, never in the workspace) and print its policy line."""
    from mlops_supervisor.policies.identity import default_key_dir, generate_key

    if not name.strip() or "/" in name or name.startswith("."):
        raise UsageError(f"key name {name!r} is not allowed; use the person's name, without '/' or a leading '.'")
    path = (key_dir or default_key_dir()).expanduser().absolute() / name
    line = generate_key(path, comment=name)
    if as_json:
        sys.stdout.write(
            json.dumps({"status": "done", "name": name, "private_key": str(path), "public_key": line}) + "\n"
        )
        return
    err.print(f"private key written to {path} (mode 0600); keep it to yourself")
    err.print("add this line under people in the workspace policy:")
    sys.stdout.write(f"  {name}: {line}\n")


@policy_app.command("show")
def policy_show(as_json: JsonFlag = False) -> None:
    """The policy in force (verified against its signed installation) and who installed it."""
    from mlops_supervisor._policy_store import policy_in_force
    from mlops_supervisor._workspace import Workspace

    with _audit_store() as audit:
        policy = policy_in_force(Workspace(_workspace_path()), audit)
    facts = {
        "status": "done",
        "source": policy.source,
        "sha256": policy.digest,
        "people": sorted(policy.people),
        "approvers": list(policy.approvers),
        "held_for_approval": list(policy.approval.required_for),
    }
    if as_json:
        sys.stdout.write(json.dumps(facts) + "\n")
        return
    for k, v in facts.items():
        if k != "status":
            out.print(f"{k}: {', '.join(v) if isinstance(v, list) else v}")


@policy_app.command("apply")
def policy_apply(
    file: Annotated[Path, typer.Argument(help="the new policy (YAML)")],
    user: AsOpt = None,
    key: KeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Install FILE as the workspace policy, signed by you; a loosening waits for an approver's signature."""
    with _supervisor("offline", user=user) as sup:
        result = sup.apply_policy(file, key=key)
    _emit_dict(result, as_json)


@policy_app.command("approve")
def policy_approve(
    digest: Annotated[str, typer.Argument(help="the proposed policy's sha256 (6+ characters)")],
    user: AsOpt = None,
    key: KeyOpt = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a proposed loosening of the workspace policy, signed by you, and install it."""
    with _supervisor("offline", user=user) as sup:
        result = sup.approve_policy(digest, key=key)
    _emit_dict(result, as_json)


def _emit_dict(result: dict[str, Any], as_json: bool) -> NoReturn:
    """Print a policy change's outcome; exit 4 while it awaits an approval, like a paused thread."""
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    elif result["status"] == "installed":
        out.print(
            f"installed policy {result['digest'][:12]} (signed by {result['proposer']}"
            + (f", approved by {result['approver']}" if result.get("approver") else "")
            + ")"
            + (f"; it loosens: {'; '.join(result['widenings'])}" if result.get("widenings") else "")
        )
    else:
        out.print(f"proposed policy {result['digest'][:12]}; it loosens: {'; '.join(result['widenings'])}")
        err.print(
            f"[yellow]awaiting approval[/] by one of {', '.join(result['approvers']) or 'nobody'}: "
            f"{result['approve_command']}"
        )
    raise typer.Exit(0 if result["status"] == "installed" else 4)


@contextmanager
def _audit_store() -> Iterator[AuditStore]:
    """The audit chain the settings name (the workspace's file, or the shared PostgreSQL table), closed after."""
    from mlops_supervisor._settings import Settings
    from mlops_supervisor._stores import open_audit

    audit = open_audit(Settings(), _workspace_path())
    try:
        yield audit
    finally:
        audit.close()


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
