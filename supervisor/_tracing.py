"""Every supervisor run as an MLflow trace in the workspace's store, redacted before anything is stored.

One run (a graph invocation: ask, approve, reject, resume, a pipeline) is one trace. Its root span is
ours; MLflow's LangChain tracer, passed as a callback in the graph's config (no global patching, unlike
``mlflow.langchain.autolog``), adds a span per graph node and per model call; the policy, approval and
tools nodes add a span per decision, approval (``record_step``) and tool call (``step_span``, under which
the tool body's own span nests). Every trace goes to one experiment, ``mlops-supervisor``, of the
workspace's store, listed in ``mlflow ui`` beside the experiments of the runs it touched (a thread's runs
can span several experiments, and a request like ``help`` touches none); each trace is tagged with its
thread, kind, requester, status, run ids and model versions, and linked to the runs it touched
(``MlflowClient.search_traces(run_id=...)`` finds it).

Redaction: ``redact_span``, registered with ``mlflow.tracing.configure``, runs as each span ends, before
MLflow keeps or exports anything of it. It passes the span's name, inputs, outputs, attributes, events
and status text through the redactor of the supervisor whose trace it belongs to, and fails closed: a
span it cannot redact keeps no payload, only ``WITHHELD``. The trace's request and response previews
are read from the root span after that, so they hold the redacted text. Streamed model tokens are
dropped from spans (a secret split across tokens cannot be recognised): the model's whole answer is in
the span's outputs.

A node's span shows the state it was given as its scalar fields and list lengths, and its output as
where it goes and the new items of each list (the whole state is in the checkpoint). A trace is
written when its root span ends, in the run's thread, in one store transaction.

MLflow's tracing state is process-wide: the tracking URI its exporter writes to, and the configured
span processors (both reset by any ``mlflow.set_tracking_uri`` that changes the URI). So a traced run
points MLflow at its own store for its length (``using_store``, as tools do, which then leaves it as
it is) and puts back the caller's URI and span processors afterwards: two supervisors on two
workspaces trace each to its own store, one run after another. Runs of supervisors on different
stores at the same moment in two threads are not separated (the tools share that limit).

Tracing never breaks a run: a store that cannot be reached or written is reported once (a warning in
the log; ``RunResult.tracing_problem`` and a line in the report on each run it affects) and the run
goes on. ``MLOPS_TRACING=0`` (``Settings.tracing``) turns it off.

A workspace's embedded store that does not exist yet is made as a copy of an empty store kept per user
in the temporary directory (``_store_template``): MLflow takes about nine seconds to build its schema.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlops_supervisor.policies import Redactor, redact_value
from mlops_supervisor.policies.secrets_in_args import without_secrets

__all__ = [
    "TRACE_EXPERIMENT",
    "WITHHELD",
    "Step",
    "SupervisorTracing",
    "TracedRun",
    "approval_request_id",
    "approval_summary",
    "record_step",
    "redact_span",
    "run_kind",
    "step_clock",
    "step_span",
]

TRACE_EXPERIMENT = "mlops-supervisor"
"""The experiment every supervisor trace of a workspace goes to."""

WITHHELD = "<WITHHELD: this span could not be redacted, so its payload was not stored>"

_log = logging.getLogger(__name__)

# Keys whose values MLflow writes and reads back as identifiers: never rewritten.
_STRUCTURAL = frozenset(
    {
        "mlflow.traceRequestId",
        "mlflow.experimentId",
        "mlflow.spanType",
        "mlflow.spanLogLevel",
        "mlflow.spanStartTimeNs",
        "mlflow.chat.tokenUsage",
        "mlflow.llm.cost",
    }
)
_TOKEN_EVENT = "new_token"
_TAG_PREFIX = "mlops."
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_DOWN_RETRY_S = 30.0


# --- which supervisor a span belongs to ------------------------------------------------------------


@dataclass
class _Active:
    """A traced run in progress: its redactor, root span and trace id."""

    redactor: Redactor
    root: Any = None
    trace_id: str = ""


_ACTIVE: ContextVar[_Active | None] = ContextVar("mlops_supervisor_traced_run", default=None)
_REDACTORS: dict[str, Redactor] = {}
_REDACTORS_LOCK = threading.Lock()


_PROMPTS: list[str] = []


def _shipped_prompts() -> list[str]:
    """The system prompts of the supervisor and its specialists, read once."""
    if not _PROMPTS:
        try:
            from mlops_supervisor.agents import SPECIALISTS, load_prompt

            _PROMPTS.extend([load_prompt("supervisor"), *(spec.prompt for spec in SPECIALISTS.values())])
        except Exception:  # noqa: BLE001 - without them every prompt is redacted like any text
            _log.debug("reading the shipped prompts failed", exc_info=True)
    return _PROMPTS


class _RunRedactor:
    """One run's redactor with a memory of the texts it has redacted: a tool's output reaches several spans
    (the tool's, its body's, the node's update) and the redactor would analyse it each time."""

    def __init__(self, inner: Redactor, *, budget_chars: int = 8_000_000) -> None:
        self.inner = inner
        # The shipped prompts are ours, not input: they reach the model as they are, and each model call's
        # span repeats one (and would load the NLP model for nothing).
        self._done: dict[str, str] = {text: text for text in _shipped_prompts()}
        self._budget = budget_chars

    def redact_text(self, text: str) -> str:
        done = self._done.get(text)
        if done is not None:
            return done
        result = self.inner.redact_text(text)
        if isinstance(result, str) and self._budget > len(text):
            self._budget -= len(text)
            self._done[text] = result
        return result

    def findings(self, text: str) -> list[Any]:
        return self.inner.findings(text)

    def secret_findings(self, text: str) -> list[Any]:
        scan = getattr(self.inner, "secret_findings", None)
        found: list[Any] = scan(text) if callable(scan) else self.inner.findings(text)
        return found

    def prime(self, texts: list[str]) -> None:
        prime = getattr(self.inner, "prime", None)
        fresh = [t for t in texts if t not in self._done]
        if callable(prime) and len(fresh) > 1:
            prime(fresh)


def _redactor_for(span: Any) -> Redactor | None:
    with _REDACTORS_LOCK:
        found = _REDACTORS.get(str(getattr(span, "trace_id", "")))
    if found is not None:
        return found
    active = _ACTIVE.get()
    return active.redactor if active is not None else None


# --- the span processor --------------------------------------------------------------------------------


class _Unwalkable(TypeError):
    """A value that is not plain JSON data (mappings with string keys, lists, strings, numbers)."""


def _check_walkable(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise _Unwalkable("nested more than 64 levels deep")
    if value is None or isinstance(value, str | bool | int | float):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Unwalkable(f"a mapping key of type {type(k).__name__}")
            _check_walkable(v, depth + 1)
        return
    if isinstance(value, list | tuple):
        for v in value:
            _check_walkable(v, depth + 1)
        return
    raise _Unwalkable(f"a value of type {type(value).__name__}")


def _redacted(redactor: Redactor, value: Any) -> Any:
    """``value`` with every string redacted; ``_Unwalkable`` unless it is plain JSON data.

    The secrets the redactor's secrets-only scan finds are blanked first (``without_secrets``), as the
    graph does for a proposed call's arguments: a secret ``redact_text`` would keep is not stored either.
    """
    _check_walkable(value)
    result = redact_value(redactor, without_secrets(redactor, value))
    _check_walkable(result)
    return result


def _safe_text(redactor: Redactor, text: str) -> str:
    """``text`` redacted for a trace tag or a message, or ``WITHHELD`` when the redactor fails on it."""
    try:
        return _text(redactor, text)
    except Exception:  # noqa: BLE001 - fail closed, never fail the run
        return WITHHELD


def _text(redactor: Redactor, text: str) -> str:
    """One string redacted, its secrets blanked first; ``_Unwalkable`` when the redactor answers with no string."""
    result = redactor.redact_text(without_secrets(redactor, text))
    if not isinstance(result, str):
        raise _Unwalkable(f"the redactor answered with a value of type {type(result).__name__}")
    return result


def _redacted_attribute(redactor: Redactor, raw: Any) -> Any:
    """One OpenTelemetry attribute value redacted: MLflow keeps JSON text there, others plain values."""
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return _text(redactor, raw)
        if isinstance(parsed, str | dict | list):
            return json.dumps(_redacted(redactor, parsed), ensure_ascii=False)
        return raw
    if raw is None or isinstance(raw, bool | int | float):
        return raw
    if isinstance(raw, list | tuple):
        return tuple(_redacted_attribute(redactor, v) for v in raw)
    raise _Unwalkable(f"an attribute value of type {type(raw).__name__}")


def _redact_payload(span: Any, redactor: Redactor) -> None:
    """Redact everything of ``span``; nothing is written to it unless all of it was redacted."""
    from opentelemetry.trace import Status

    otel = span._span
    name = _text(redactor, str(otel.name))
    attributes = {
        key: _redacted_attribute(redactor, raw)
        for key, raw in dict(otel.attributes or {}).items()
        if key not in _STRUCTURAL
    }
    events = []
    tokens = 0
    for event in list(otel.events or ()):
        if event.name == _TOKEN_EVENT:
            tokens += 1
            continue
        events.append(
            (
                _text(redactor, event.name),
                {k: _redacted_attribute(redactor, v) for k, v in dict(event.attributes or {}).items()},
                event.timestamp,
            )
        )
    status = otel.status
    description = _text(redactor, status.description) if status.description else status.description
    # everything redacted: now write it
    otel.update_name(name)
    for key, value in attributes.items():
        otel.set_attribute(key, value)
    if tokens:
        otel.set_attribute("mlops.streamed_tokens", tokens)
    _replace_events(otel, events)
    if description != status.description:
        otel._status = Status(status.status_code, description)


def _replace_events(otel: Any, events: list[tuple[str, dict[str, Any], int]]) -> None:
    from opentelemetry.sdk.trace import Event
    from opentelemetry.sdk.util import BoundedList

    maxlen = getattr(getattr(otel._events, "_dq", None), "maxlen", None)
    replaced: Any = BoundedList(maxlen)
    for name, attributes, timestamp in events:
        replaced.append(Event(name, attributes, timestamp))
    otel._events = replaced


def _drop_events(otel: Any) -> None:
    """The last resort when events cannot be replaced: none are kept."""
    otel._events = ()


def _withhold(span: Any, why: str) -> None:
    """Fail closed: ``span`` keeps its identifiers, timing and type, and ``WITHHELD`` for everything else."""
    from opentelemetry.trace import Status, StatusCode

    otel = span._span
    steps = (
        lambda: otel.update_name("span withheld"),
        lambda: [
            otel.set_attribute(key, json.dumps(WITHHELD) if key.startswith("mlflow.") else WITHHELD)
            for key in dict(otel.attributes or {})
            if key not in _STRUCTURAL
        ],
        lambda: otel.set_attribute("mlops.redaction", f"failed ({why}); payload withheld"),
        lambda: _replace_events(otel, [("redaction_failed", {"reason": why}, time.time_ns())]),
        lambda: None if all(e.name == "redaction_failed" for e in otel.events) else _drop_events(otel),
        lambda: setattr(
            otel, "_status", Status(StatusCode.ERROR, WITHHELD) if otel.status.description else otel.status
        ),
    )
    for step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - each part is withheld on its own; one failing must not stop the rest
            _log.debug("withholding part of a span failed", exc_info=True)


def redact_span(span: Any) -> None:
    """MLflow span processor: a supervisor's span redacted by that supervisor's redactor before it is stored.

    Spans of traces that are not a supervisor run's are left as they are. A span it cannot redact
    (the redactor raises, a value that is not plain data) is stored with ``WITHHELD`` in place of its
    name, inputs, outputs, attributes, events and status text.
    """
    redactor = _redactor_for(span)
    if redactor is None:
        return
    try:
        _redact_payload(span, redactor)
    except Exception as exc:  # noqa: BLE001 - fail closed, never fail the run
        _withhold(span, type(exc).__name__)


def _ensure_processor() -> None:
    """``redact_span`` in MLflow's span processors, last (after any of the caller's own)."""
    import mlflow
    from mlflow.tracing.config import get_config

    current = list(get_config().span_processors)
    if current[-1:] != [redact_span]:
        mlflow.tracing.configure(span_processors=[*(p for p in current if p is not redact_span), redact_span])


_TRACER_CLASS: list[type] = []
_STATE_FIELDS = ("thread_id", "mode", "model", "requester", "request", "steps", "route", "status", "failure")


def _is_state(value: Any) -> bool:
    """Whether ``value`` is the supervisor graph's state (a node's or the graph's input)."""
    return isinstance(value, Mapping) and "thread_id" in value and ("steps" in value or "requester" in value)


def _state_view(value: Any) -> Any:
    """What a node's span shows of the state it was given: its scalar fields and the length of each list.

    The whole state (every message, decision and tool output so far) is in the checkpoint; copying it
    into each node's span would make traces grow with the square of a run's length.
    """
    if not _is_state(value):
        return value
    view: dict[str, Any] = {k: value[k] for k in _STATE_FIELDS if k in value}
    view.update({f"{k} (count)": len(v) for k, v in value.items() if isinstance(v, list)})
    return view


def _node_output(value: Any, sizes: Mapping[str, int]) -> Any:
    """What a node's span shows of its output: where it goes and its update, with only the new items of each
    list the node extends (``sizes``: the lengths in its input)."""
    update = getattr(value, "update", None)
    if isinstance(update, Mapping):
        goto = getattr(value, "goto", None)
        return {
            "goto": goto if isinstance(goto, str | list | tuple) else str(goto),
            "update": _new_items(update, sizes),
        }
    if _is_state(value):
        return _state_view(value)
    if isinstance(value, Mapping):
        return _new_items(value, sizes)
    return value


def _new_items(update: Mapping[str, Any], sizes: Mapping[str, int]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for key, item in update.items():
        if isinstance(item, list) and sizes.get(key):
            shown[f"{key} (new)"] = item[sizes[key] :]
        else:
            shown[key] = item
    return shown


def _langchain_tracer() -> Any:
    """MLflow's LangChain tracer, checking before each span that ``redact_span`` is still configured (any
    ``mlflow.set_tracking_uri`` to another URI during the run would have dropped it)."""
    if not _TRACER_CLASS:
        from mlflow.langchain.langchain_tracer import MlflowLangchainTracer

        class _Tracer(MlflowLangchainTracer):
            def __init__(self) -> None:
                super().__init__()
                self._sizes: dict[str, dict[str, int]] = {}

            def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, **kwargs: Any) -> Any:
                if _is_state(inputs):
                    self._sizes[str(run_id)] = {k: len(v) for k, v in inputs.items() if isinstance(v, list)}
                return super().on_chain_start(serialized, _state_view(inputs), run_id=run_id, **kwargs)

            def on_chain_end(self, outputs: Any, *, run_id: Any, inputs: Any = None, **kwargs: Any) -> Any:
                sizes = self._sizes.pop(str(run_id), {})
                inputs = _state_view(inputs) if inputs is not None else None
                return super().on_chain_end(_node_output(outputs, sizes), run_id=run_id, inputs=inputs, **kwargs)

            def on_chain_error(self, error: BaseException, *, run_id: Any, inputs: Any = None, **kwargs: Any) -> Any:
                self._sizes.pop(str(run_id), None)
                inputs = _state_view(inputs) if inputs is not None else None
                return super().on_chain_error(error, run_id=run_id, inputs=inputs, **kwargs)

            def _start_span(self, *args: Any, **kwargs: Any) -> Any:
                _ensure_processor()
                return super()._start_span(*args, **kwargs)

            def _end_span(self, *args: Any, **kwargs: Any) -> Any:
                _ensure_processor()
                return super()._end_span(*args, **kwargs)

        _TRACER_CLASS.append(_Tracer)
    return _TRACER_CLASS[0]()


# --- steps the graph records -------------------------------------------------------------------------


def step_clock() -> int:
    """Now, in nanoseconds: when a step ``record_step`` will record began."""
    return time.time_ns()


def record_step(
    name: str,
    span_type: str,
    *,
    started_ns: int,
    inputs: Any = None,
    outputs: Any = None,
    attributes: Mapping[str, Any] | None = None,
    error: str = "",
) -> None:
    """A finished step of the graph (a decision, an approval, a tool call) as a span under the current
    node's span, when this run is traced; nothing otherwise. Never raises."""
    active = _ACTIVE.get()
    if active is None or active.root is None:
        return
    try:
        import mlflow
        from mlflow.entities import SpanStatus, SpanStatusCode
        from mlflow.tracing.fluent import start_span_no_context

        _ensure_processor()
        parent = mlflow.get_current_active_span()
        if parent is None or parent.trace_id != active.trace_id:
            parent = active.root
        span = start_span_no_context(
            name,
            span_type=span_type,
            parent_span=parent,
            inputs=inputs,
            attributes=dict(attributes or {}),
            start_time_ns=started_ns,
        )
        status = SpanStatus(SpanStatusCode.ERROR, error) if error else SpanStatus(SpanStatusCode.OK)
        span.end(outputs=outputs, status=status)
    except Exception:  # noqa: BLE001 - tracing never breaks a run
        _log.debug("recording the span %s failed", name, exc_info=True)


@dataclass
class Step:
    """A step's span while it runs (``step_span``): ``finish`` says how it ended."""

    span: Any = None
    outputs: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def finish(self, *, outputs: Any = None, attributes: Mapping[str, Any] | None = None, error: str = "") -> None:
        """Record the step's outputs, attributes and (when it failed) its error, for when the span ends."""
        self.outputs, self.error = outputs, error
        self.attributes.update(attributes or {})


@contextmanager
def step_span(name: str, span_type: str, *, inputs: Any = None) -> Iterator[Step]:
    """A step of the graph (a tool call) as a span that is the current span while it runs, so what the step
    does (the tool body's own span) nests under it; nothing when the run is not traced. Never raises
    on its own account; an exception of the body is recorded and propagates."""
    step = Step()
    active = _ACTIVE.get()
    token = None
    if active is not None and active.root is not None:
        try:
            import mlflow
            from mlflow.tracing.fluent import start_span_no_context
            from mlflow.tracing.provider import set_span_in_context

            _ensure_processor()
            parent = mlflow.get_current_active_span()
            if parent is None or parent.trace_id != active.trace_id:
                parent = active.root
            step.span = start_span_no_context(name, span_type=span_type, parent_span=parent, inputs=inputs)
            token = set_span_in_context(step.span)
        except Exception:  # noqa: BLE001 - tracing never breaks a run
            _log.debug("starting the span %s failed", name, exc_info=True)
    raised: BaseException | None = None
    try:
        yield step
    except BaseException as exc:
        raised = exc
        step.error = step.error or f"{type(exc).__name__}: {exc}"
        raise
    finally:
        if step.span is not None:
            try:
                from mlflow.entities import SpanEvent, SpanStatus, SpanStatusCode
                from mlflow.tracing.provider import detach_span_from_context

                if token is not None:
                    detach_span_from_context(token)
                if raised is not None:
                    step.span.add_event(SpanEvent.from_exception(raised))  # type: ignore[arg-type]
                status = SpanStatus(SpanStatusCode.ERROR, step.error) if step.error else SpanStatus(SpanStatusCode.OK)
                step.span.end(outputs=step.outputs, attributes=step.attributes, status=status)
            except Exception:  # noqa: BLE001 - tracing never breaks a run
                _log.debug("ending the span %s failed", name, exc_info=True)


# --- runs ----------------------------------------------------------------------------------------------


def run_kind(payload: Any) -> str:
    """What a graph invocation is, from its payload: ask, pipeline, approve, reject or resume."""
    if payload is None:
        return "resume"
    resume = getattr(payload, "resume", None)
    if isinstance(resume, Mapping):
        return str(resume.get("decision") or "resume")
    if isinstance(payload, Mapping) and payload.get("mode") == "pipeline":
        return "pipeline"
    return "ask"


def run_inputs(payload: Any) -> dict[str, Any]:
    """What the root span shows as a run's inputs: the (already redacted) request, or the approval answer."""
    resume = getattr(payload, "resume", None)
    if isinstance(resume, Mapping):
        return {k: resume[k] for k in ("decision", "approver", "reason", "binding") if k in resume}
    if isinstance(payload, Mapping):
        return {k: payload[k] for k in ("request", "requester", "mode") if k in payload}
    return {}


def touched(outputs: list[Any]) -> tuple[list[str], list[str]]:
    """The MLflow run ids and model versions (``model/version``) named in tool outputs and arguments."""
    runs: dict[str, None] = {}
    versions: dict[str, None] = {}

    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, Mapping):
            model, version = value.get("model"), value.get("version")
            if isinstance(model, str) and isinstance(version, int | str) and str(version).isdigit():
                versions[f"{model}/{version}"] = None
            for k, v in value.items():
                walk(v, str(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and key.endswith("run_id") and _RUN_ID.match(value):
            runs[value] = None

    walk(outputs)
    return list(runs), list(versions)


@dataclass
class TracedRun:
    """One run's trace, while the graph runs: pass ``config(...)`` to the graph and ``finish(result)`` at
    the end. ``trace_id`` is empty and ``problem`` says why when the run is not traced."""

    trace_id: str = ""
    problem: str = ""
    callbacks: list[Any] = field(default_factory=list)
    active: _Active | None = None
    tags: dict[str, str] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)
    outcome: dict[str, Any] = field(default_factory=dict)

    def config(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with the tracer among its callbacks."""
        if not self.callbacks:
            return config
        return {**config, "callbacks": [*(config.get("callbacks") or []), *self.callbacks]}

    def finish(self, result: Any) -> None:
        """Tag the trace with the run's outcome: status, requester, run ids and model versions it touched.

        ``result`` is the run's ``RunResult``; the outputs of earlier runs of the thread count too.
        """
        if self.active is None:
            return
        try:
            outputs = [{"args": o.output, "tool": o.tool} for o in result.outputs]
            args = [d.model_dump() for d in result.decisions]
            runs, versions = touched([outputs, args])
            redactor = self.active.redactor
            self.run_ids = runs
            self.tags.update(
                {
                    "mlops.status": str(result.status),
                    "mlops.requester": _safe_text(redactor, str(result.requester)),
                    "mlops.run_ids": ",".join(runs),
                    "mlops.model_versions": _safe_text(redactor, ",".join(versions)),
                }
            )
            if result.pending_approval is not None:
                self.tags["mlops.approval_request"] = approval_request_id(result.pending_approval.binding)
            self.outcome = {
                "status": result.status,
                "summary": result.report.summary,
            }
        except Exception:  # noqa: BLE001 - tracing never breaks a run
            _log.debug("tagging the trace failed", exc_info=True)


def approval_request_id(binding: str) -> str:
    """The stable id of an approval request: derived from its binding, which names nothing raw."""
    return f"approval-{binding[:16]}"


def approval_summary(request: Any, redactor: Redactor) -> str:
    """One redacted line saying what an approval request holds, without its arguments: the tool, the agent,
    the requester and, for an evidence-bound approval, the action."""
    action = f" ({request.approval_action})" if request.approval_action else ""
    return _safe_text(
        redactor,
        f"{request.tool}{action} proposed by the {request.agent} agent for {request.requester}, "
        "waiting for a listed approver",
    )


_ASYNC_ENV = "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING"
# Trace tags and metadata whose values are identifiers or already redacted: not passed through the redactor.
_OWN_FIELDS = frozenset(
    {"mlops.thread_id", "mlops.kind", "mlops.run_ids", "mlops.approval_request", "mlflow.trace.session"}
)


class _OneWritePerTrace:
    """Wraps MLflow's span exporter so a trace's spans are written together when its root span ends (one
    store transaction), not one transaction per span as MLflow's synchronous exporter does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._pending: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    def export(self, spans: Any) -> Any:
        ready: list[Any] = []
        with self._lock:
            for span in spans:
                held = self._pending.setdefault(span.context.trace_id, [])
                held.append(span)
                if span.parent is None:
                    ready += self._pending.pop(span.context.trace_id)
        return self.inner.export(ready) if ready else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _batch_exports() -> None:
    """Wrap the span exporter of MLflow's current tracer provider in ``_OneWritePerTrace`` (once)."""
    from mlflow.tracing.provider import _get_span_processor

    processor = _get_span_processor()  # type: ignore[no-untyped-call]
    exporter = getattr(processor, "span_exporter", None)
    if exporter is not None and not isinstance(exporter, _OneWritePerTrace):
        processor.span_exporter = _OneWritePerTrace(exporter)


@dataclass
class _Restore:
    """What a traced run changed in MLflow's process-wide state, to put back when it ends."""

    store: Any = None
    processors: list[Any] | None = None
    token: Any = None
    async_env: str | None = None
    env_set: bool = False

    def undo(self) -> None:
        """Detach the root span; flush; point MLflow back at the caller's store, span processors and settings."""
        import mlflow
        from mlflow.tracing.provider import detach_span_from_context

        steps = (
            lambda: detach_span_from_context(self.token) if self.token is not None else None,
            mlflow.flush_trace_async_logging,
            lambda: self.store.__exit__(None, None, None) if self.store is not None else None,
            lambda: mlflow.tracing.configure(span_processors=self.processors) if self.processors is not None else None,
            self._restore_env,
        )
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - tracing never breaks a run
                _log.debug("restoring MLflow's tracing state failed", exc_info=True)
        self.store = self.processors = self.token = None

    def _restore_env(self) -> None:
        if not self.env_set:
            return
        self.env_set = False
        if self.async_env is None:
            os.environ.pop(_ASYNC_ENV, None)
        else:
            os.environ[_ASYNC_ENV] = self.async_env


class SupervisorTracing:
    """Tracing for one ``Supervisor``: its store, redactor and whether it is on."""

    def __init__(
        self,
        *,
        workspace: Path,
        tracking_uri: str,
        redactor: Redactor,
        log: Any,
        enabled: bool = True,
        experiment: str = TRACE_EXPERIMENT,
    ) -> None:
        self.workspace = Path(workspace)
        self.tracking_uri = tracking_uri
        self.redactor = redactor
        self.enabled = enabled
        self.experiment = experiment
        self._log = log
        self._experiment_id: str | None = None
        self._warned = False
        self._down_until = 0.0
        self._down_reason = ""

    # -- the store --------------------------------------------------------------------------------------

    def _fail(self, what: str, exc: BaseException | str) -> str:
        """Report a store problem: a warning the first time, the one-line reason every time."""
        detail = _safe_text(self.redactor, str(exc) if isinstance(exc, str) else f"{type(exc).__name__}: {exc}")
        detail = detail.splitlines()[0][:300] if detail else ""
        problem = (
            f"tracing is off for this run: {what} ({detail}); the run itself was not affected. "
            f"Traces go to experiment {self.experiment!r} of {_safe_text(self.redactor, self.tracking_uri)}"
        )
        self._down_until = time.monotonic() + _DOWN_RETRY_S
        self._down_reason = problem
        if not self._warned:
            self._warned = True
            try:
                self._log.warning("tracing_unavailable", problem=problem)
            except Exception:  # noqa: BLE001 - a logger that refuses keyword arguments
                _log.warning(problem)
        return problem

    def _reachable(self) -> None:
        """Raise ``OSError`` fast when an HTTP tracking server is not listening (MLflow's own client retries
        for minutes)."""
        parts = urlsplit(self.tracking_uri)
        if parts.scheme not in ("http", "https"):
            return
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "localhost", port), timeout=2.0):
            pass

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _embedded(self) -> Path | None:
        """The SQLite file of the workspace's embedded store, when that is the store."""
        from mlops_supervisor.tools.core._store import default_tracking_uri

        return self.workspace / "mlflow.db" if self.tracking_uri == default_tracking_uri(self.workspace) else None

    def _experiment(self, *, create: bool) -> str | None:
        if self._experiment_id is not None:
            return self._experiment_id
        from mlops_supervisor.tools.core._store import create_embedded_store, ensure_experiment

        embedded = self._embedded()
        if embedded is not None and not embedded.exists():
            if not create:
                return None
            create_embedded_store(self.workspace)
        client = self._client()
        if create:
            self._experiment_id = ensure_experiment(
                client, self.experiment, workspace=self.workspace, tracking_uri=self.tracking_uri
            )
        else:
            found = client.get_experiment_by_name(self.experiment)
            self._experiment_id = str(found.experiment_id) if found is not None else None
        return self._experiment_id

    # -- one run ----------------------------------------------------------------------------------------

    def invocation(self, payload: Any, *, thread_id: str, actor: str) -> Any:
        """``run`` for the graph invocation of ``payload`` (a new request's state, a ``Command`` resuming with
        an answer, or None): a context manager yielding the ``TracedRun``.

        The pattern, for ``invoke`` and ``stream`` alike::

            with self._tracing.invocation(payload, thread_id=thread_id, actor=self.user) as traced:
                graph.invoke(payload, traced.config(self._config(thread_id)))   # or iterate graph.stream(...)
                traced.finish(self._result(thread_id))
            return self._result(thread_id, traced=traced)
        """
        return self.run(run_kind(payload), thread_id=thread_id, actor=actor, inputs=run_inputs(payload))

    @contextmanager
    def run(self, kind: str, *, thread_id: str, actor: str, inputs: Mapping[str, Any]) -> Iterator[TracedRun]:
        """Trace one graph invocation on ``thread_id``: a root span named ``kind`` around the body.

        Use the ``TracedRun``'s ``config`` for the graph and call its ``finish`` with the ``RunResult``
        before the block ends. Errors of the body propagate unchanged; tracing's own never do.
        """
        if not self.enabled:
            yield TracedRun()
            return
        if time.monotonic() < self._down_until:
            yield TracedRun(problem=self._down_reason)
            return
        traced, restore = self._start(kind, thread_id=thread_id, actor=actor, inputs=inputs)
        token = _ACTIVE.set(traced.active) if traced.active is not None else None
        error: BaseException | None = None
        try:
            yield traced
        except BaseException as exc:
            error = exc
            raise
        finally:
            if token is not None:
                try:
                    _ACTIVE.reset(token)
                except ValueError:  # left in another context (a generator closed elsewhere)
                    _ACTIVE.set(None)
            self._end(traced, restore, error)

    def _start(self, kind: str, *, thread_id: str, actor: str, inputs: Mapping[str, Any]) -> tuple[TracedRun, _Restore]:
        restore = _Restore()
        try:
            self._reachable()
            experiment_id = self._experiment(create=True)
            from mlflow.entities import SpanType
            from mlflow.tracing.config import get_config
            from mlflow.tracing.fluent import start_span_no_context
            from mlflow.tracing.provider import set_span_in_context

            from mlops_supervisor.tools.core._store import using_store

            # Export as each trace ends, in this thread: MLflow's background queue would make every run wait
            # about a second for its flush, and its failures could not be reported with the run.
            restore.async_env = os.environ.get(_ASYNC_ENV)
            os.environ[_ASYNC_ENV] = "false"
            restore.env_set = True
            restore.store = using_store(self.tracking_uri)
            restore.store.__enter__()
            restore.processors = list(get_config().span_processors)  # after the URI switch, which resets them
            _ensure_processor()
            active = _Active(redactor=_RunRedactor(self.redactor))
            tags = {"mlops.thread_id": thread_id, "mlops.kind": kind, "mlops.actor": _safe_text(self.redactor, actor)}
            root = start_span_no_context(
                kind,
                span_type=SpanType.AGENT,
                inputs=dict(inputs),
                tags=tags,
                metadata={"mlflow.trace.session": thread_id, "mlflow.trace.user": tags["mlops.actor"]},
                experiment_id=experiment_id,
            )
            active.root, active.trace_id = root, str(root.trace_id)
            with _REDACTORS_LOCK:
                _REDACTORS[active.trace_id] = active.redactor
            restore.token = set_span_in_context(root)
            _batch_exports()
            traced = TracedRun(trace_id=active.trace_id, callbacks=[_langchain_tracer()], active=active, tags=tags)
            return traced, restore
        except Exception as exc:  # noqa: BLE001 - tracing never breaks a run
            restore.undo()
            return TracedRun(problem=self._fail("the tracking store cannot be reached", exc)), _Restore()

    def _end(self, traced: TracedRun, restore: _Restore, error: BaseException | None) -> None:
        active = traced.active
        if active is None:
            return
        try:
            from mlflow.entities import SpanStatus, SpanStatusCode
            from mlflow.tracing.trace_manager import InMemoryTraceManager

            _ensure_processor()
            manager = InMemoryTraceManager.get_instance()  # type: ignore[no-untyped-call]
            with manager.get_trace(active.trace_id) as trace:
                if trace is not None:
                    trace.info.tags.update(traced.tags)
                    # MLflow's own tags and metadata (the source file, the OS user, the git commit) are not
                    # spans: no span processor sees them, so they are redacted here.
                    for fields in (trace.info.tags, trace.info.trace_metadata):
                        for key, value in list(fields.items()):
                            if isinstance(value, str) and key not in _OWN_FIELDS:
                                fields[key] = _safe_text(self.redactor, value)
            status = (
                SpanStatus(SpanStatusCode.ERROR, f"{type(error).__name__}: {error}")
                if error is not None and not isinstance(error, GeneratorExit)
                else SpanStatus(SpanStatusCode.OK)
            )
            active.root.end(outputs=traced.outcome or None, status=status)
        except Exception as exc:  # noqa: BLE001
            traced.problem = self._fail("the trace could not be finished", exc)
        finally:
            restore.undo()
            with _REDACTORS_LOCK:
                _REDACTORS.pop(active.trace_id, None)
        if not traced.problem:
            self._check_stored(traced)

    def _check_stored(self, traced: TracedRun) -> None:
        """The trace is in the store (MLflow's exporter only logs a failure), and linked to its runs."""
        try:
            from mlflow.tracing.client import TracingClient

            TracingClient(self.tracking_uri).get_trace_info(traced.trace_id)
            client = self._client()
        except Exception as exc:  # noqa: BLE001
            traced.problem = self._fail("the trace could not be written to the tracking store", exc)
            traced.trace_id = ""
            return
        for run_id in traced.run_ids:
            try:
                client.link_traces_to_run([traced.trace_id], run_id)
            except Exception:  # noqa: BLE001 - a run in another store, or deleted: the tags still name it
                _log.debug("linking trace %s to run %s failed", traced.trace_id, run_id, exc_info=True)

    # -- reading back -----------------------------------------------------------------------------------

    def trace_ids(self, thread_id: str) -> list[str]:
        """Every trace of ``thread_id`` in the store, oldest first; empty when tracing is off or the store is down."""
        if not self.enabled or time.monotonic() < self._down_until:
            return []
        try:
            self._reachable()
            experiment_id = self._experiment(create=False)
            if experiment_id is None:
                return []
            found = self._client().search_traces(
                locations=[experiment_id],
                filter_string=f"tag.`mlops.thread_id` = '{thread_id}'",
                include_spans=False,
                max_results=500,
                order_by=["timestamp_ms ASC"],
            )
        except Exception as exc:  # noqa: BLE001
            self._fail("the tracking store cannot be read", exc)
            return []
        return [str(t.info.trace_id) for t in found]

    def annotate(self, result: Any, traced: TracedRun | None = None) -> Any:
        """``result`` (a ``RunResult``) with its trace ids, any tracing problem, and a line in the report."""
        if not self.enabled:
            return result
        ids = self.trace_ids(result.thread_id)
        problem = traced.problem if traced is not None else ""
        if traced is not None and traced.trace_id and traced.trace_id not in ids:
            ids.append(traced.trace_id)
        current = traced.trace_id if traced is not None else ""
        from mlops_supervisor._report import trace_line

        line = trace_line(
            trace_id=current,
            trace_ids=ids,
            experiment=self.experiment,
            store=_safe_text(self.redactor, self.tracking_uri),
            problem=problem,
        )
        report = result.report
        if line:
            verification = f"{report.verification}\n- {line}" if report.verification else f"- {line}"
            report = report.model_copy(update={"verification": verification})
        return result.model_copy(
            update={"trace_id": current or None, "trace_ids": ids, "tracing_problem": problem, "report": report}
        )
