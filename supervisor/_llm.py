"""The LLM layer: model spec strings, the offline planner model, and the request switch.

Specs: ``offline`` (deterministic planner, no key, no network), ``scripted:PATH`` (replays
a script per node) and ``openai:MODEL`` (langchain-openai; honours ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``, whose host must be on the egress allow-list). ``MLOPS_ALLOW_MODEL_REQUESTS=0`` refuses every real model request
at request time; the test suite sets it.

An ``openai:`` client streams (so ``stream_mode="messages"`` sees the tokens as they come, and
each streamed answer ends with its token usage), waits ``MLOPS_LLM_TIMEOUT`` seconds per attempt
and retries ``MLOPS_LLM_MAX_RETRIES`` times. The retries are the openai SDK's own
(``openai/_base_client.py``): on 408, 409, 429, 5xx, timeouts and connection errors, waiting what
``retry-after-ms`` or ``Retry-After`` says (up to two minutes; a longer wait is not retried), else
0.5 s doubling up to 8 s, less up to 25% jitter. A request that still fails raises
``ModelRequestError`` with one message naming the model, the base URL and what to check.

``ModelProvider.structured`` asks for a schema (the supervisor's ``Route``) through structured
output (``response_format`` json_schema), and falls back to a forced tool call, for the rest of
the process, on a server that refuses ``response_format`` or answers it with something not JSON.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import BaseModel, SecretStr

from mlops_supervisor._planner import PlannedCommand, parse_command
from mlops_supervisor._settings import Settings
from mlops_supervisor._usage import PriceTable, add_usage, load_prices
from mlops_supervisor.policies import ModelRequestsNotAllowedError, RunError, UsageError
from mlops_supervisor.policies.egress import EgressDeniedError, allowed_destinations, egress_refusal
from mlops_supervisor.testing import ScriptedChatModel, as_chunk, load_script

__all__ = [
    "ModelProvider",
    "ModelRequestError",
    "OfflineChatModel",
    "model_requests_allowed",
    "resolve_model",
    "structured_output_refused",
]

_Schema = TypeVar("_Schema", bound=BaseModel)

# LangGraph's tag for a model call whose tokens stay out of stream_mode="messages" (the route's JSON).
_NOSTREAM = "nostream"

MODEL_SPEC_HELP = "allowed model specs: offline, scripted:PATH (a YAML/JSON script), openai:MODEL"
DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"


def model_requests_allowed() -> bool:
    """False when ``MLOPS_ALLOW_MODEL_REQUESTS`` is set to 0/false/no/off."""
    return os.environ.get("MLOPS_ALLOW_MODEL_REQUESTS", "1").strip().lower() not in {"0", "false", "no", "off"}


class OfflineChatModel(BaseChatModel):
    """The specialists' side of the offline planner.

    Given a task in the command grammar it proposes that command's tool call; given a
    tool's answer it reports it. It proposes the call whatever its allow-list says: the
    policy node, not the model, enforces allow-lists.
    """

    @property
    def _llm_type(self) -> str:
        return "offline-planner"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The planner needs no tool schemas: the grammar fixes each call."""
        return self

    def _answer(self, messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1] if messages else None
        if isinstance(last, ToolMessage):
            verdict = "failed" if last.status == "error" else "returned"
            return AIMessage(content=f"{last.name or 'the tool'} {verdict}: {last.content}")
        task = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        if task is None:
            return AIMessage(content="I was given no task.")
        command: PlannedCommand = parse_command(str(task.content))
        call_id = "call_" + hashlib.sha256(f"{len(messages)}:{command.text}".encode()).hexdigest()[:16]
        return AIMessage(
            content="",
            tool_calls=[{"name": command.tool, "args": command.args, "id": call_id, "type": "tool_call"}],
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield ChatGenerationChunk(message=as_chunk(self._answer(messages)))


class ModelRequestError(RunError):
    """A request to a real model that failed after the client's retries: the server's answer or its silence.

    ``status`` is the HTTP status the server answered (None for a timeout or no connection).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _explain(
    exc: Exception, *, model: str, base_url: str, timeout: float, retries: int, key: str = ""
) -> ModelRequestError:
    """One clear ``ModelRequestError`` for an openai SDK error: the model, the base URL, what to check.

    ``key`` (the API key) is blanked wherever the server's own words would repeat it.
    """
    error = _describe(exc, model=model, base_url=base_url, timeout=timeout, retries=retries)
    if key and key in str(error):
        return ModelRequestError(str(error).replace(key, "<OPENAI_API_KEY>"), status=error.status)
    return error


def _describe(exc: Exception, *, model: str, base_url: str, timeout: float, retries: int) -> ModelRequestError:
    import openai

    attempts = f"{retries + 1} attempt{'s' if retries else ''}"
    where = f"openai:{model} at {base_url}"
    if isinstance(exc, openai.APITimeoutError):
        return ModelRequestError(
            f"{where} did not answer within {timeout:g} s ({attempts}); check that the server is running and "
            f"reachable from here and serves {model!r}, or allow more time with MLOPS_LLM_TIMEOUT (seconds)"
        )
    if isinstance(exc, openai.APIConnectionError):
        return ModelRequestError(
            f"{where} could not be reached ({attempts}): {exc.__cause__ or exc}; check the base URL "
            "(MLOPS_LLM_BASE_URL or OPENAI_BASE_URL) and that the server is running"
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        said = f"{where} answered {status} ({exc.message})"
        if status == 401:
            return ModelRequestError(f"{said}: the server refused the API key; check OPENAI_API_KEY", status=status)
        if status == 404:
            return ModelRequestError(
                f"{said}: check that the server serves a model named {model!r} and that the base URL ends in /v1",
                status=status,
            )
        if status in (408, 409, 429) or status >= 500:
            return ModelRequestError(
                f"{said} to all {attempts}, retried with backoff honouring Retry-After; try again later, "
                "or allow more retries with MLOPS_LLM_MAX_RETRIES",
                status=status,
            )
        return ModelRequestError(f"{said}: the server refused the request", status=status)
    return ModelRequestError(f"{where} failed: {exc}")


def structured_output_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is a server's refusal of ``response_format`` (a 400 or 422 naming it)."""
    text = str(exc).lower()
    return (
        isinstance(exc, ModelRequestError)
        and exc.status in (400, 422)
        and any(word in text for word in ("response_format", "json_schema", "structured output"))
    )


_NO_STRUCTURED_OUTPUT: set[tuple[str, str]] = set()
_NO_STRUCTURED_LOCK = threading.Lock()


def _guarded_openai(model: str, egress: Sequence[str] | None = None, settings: Settings | None = None) -> BaseChatModel:
    import openai
    from langchain_openai import ChatOpenAI

    config = settings or Settings()

    class GuardedChatOpenAI(ChatOpenAI):
        """ChatOpenAI that refuses to send anything while model requests are switched off, and fails with
        one clear message (``ModelRequestError``) when the server does not answer or refuses."""

        @property
        def structured_output_key(self) -> tuple[str, str]:
            """The server and model that ``ModelProvider.structured`` remembers a refusal of structured output for."""
            return str(self.openai_api_base), self.model_name

        def _refuse_if_blocked(self) -> None:
            if not model_requests_allowed():
                raise ModelRequestsNotAllowedError(
                    f"a request to openai:{self.model_name} was refused: MLOPS_ALLOW_MODEL_REQUESTS is off"
                )

        def _explained(self, exc: Exception) -> ModelRequestError:
            timeout = self.request_timeout if isinstance(self.request_timeout, int | float) else config.llm_timeout
            return _explain(
                exc,
                model=self.model_name,
                base_url=str(self.openai_api_base),
                timeout=float(timeout),
                retries=self.max_retries or 0,
                key=self.openai_api_key.get_secret_value() if isinstance(self.openai_api_key, SecretStr) else "",
            )

        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            self._refuse_if_blocked()
            try:
                return super()._generate(*args, **kwargs)
            except openai.APIError as exc:
                raise self._explained(exc) from None  # the raw error may quote the key

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            self._refuse_if_blocked()
            try:
                yield from super()._stream(*args, **kwargs)
            except openai.APIError as exc:
                raise self._explained(exc) from None  # the raw error may quote the key

        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            self._refuse_if_blocked()
            try:
                return await super()._agenerate(*args, **kwargs)
            except openai.APIError as exc:
                raise self._explained(exc) from None  # the raw error may quote the key

        async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
            self._refuse_if_blocked()
            try:
                async for chunk in super()._astream(*args, **kwargs):
                    yield chunk
            except openai.APIError as exc:
                raise self._explained(exc) from None  # the raw error may quote the key

    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageError(
            f"model openai:{model} needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server); "
            "use --model offline to run without a key"
        )
    base_url, allowed = _llm_destination(egress, config)
    refusal = egress_refusal(base_url, allowed)
    if refusal is not None:
        raise EgressDeniedError(
            f"the client for openai:{model} was not built: {refusal} (the LLM base URL is set by "
            "MLOPS_LLM_BASE_URL or OPENAI_BASE_URL)"
        )
    # the URL just checked, given explicitly: the client must not pick another one from its own defaults.
    # Streaming: every answer comes as chunks (stream_mode="messages" sees them) and ends with its usage.
    return GuardedChatOpenAI(
        model=model,
        temperature=0,
        base_url=base_url,
        timeout=config.llm_timeout,
        max_retries=config.llm_max_retries,
        streaming=True,
        stream_usage=True,
    )


def _llm_destination(egress: Sequence[str] | None, settings: Settings | None = None) -> tuple[str, tuple[str, ...]]:
    """The base URL the LLM client would reach and the egress allow-list it is checked against.

    The URL is the configured one (``MLOPS_LLM_BASE_URL``/``OPENAI_BASE_URL``), else the one the
    client library would take from ``OPENAI_API_BASE``, else OpenAI's. The list is ``egress`` when
    given, else the settings': loopback, the tracking server, the configured LLM URL, ``MLOPS_EGRESS_ALLOW``.
    """
    settings = settings or Settings()
    base_url = settings.llm_base_url or os.environ.get("OPENAI_API_BASE") or DEFAULT_LLM_BASE_URL
    if egress is None:
        egress = allowed_destinations(
            tracking_uri=settings.mlflow_tracking_uri,
            llm_base_url=settings.llm_base_url or DEFAULT_LLM_BASE_URL,
            extra=settings.egress_allow.split(","),
        )
    return base_url, tuple(egress)


@dataclass
class ModelProvider:
    """The chat model of each graph node for one model spec."""

    spec: str
    offline: bool = False
    _shared: BaseChatModel | None = None
    _per_node: Mapping[str, BaseChatModel] = field(default_factory=dict)
    prices: PriceTable | None = None
    """The price table (``MLOPS_LLM_PRICES``) that ``count`` prices calls with, if any."""

    def chat_model(self, node: str) -> BaseChatModel:
        """The model that drives ``node`` (``supervisor`` or a specialist's name)."""
        if node in self._per_node:
            return self._per_node[node]
        if self._shared is not None:
            return self._shared
        return ScriptedChatModel(responses=[], name_in_errors=f"the script of {self.spec} for node {node!r}")

    @property
    def model_name(self) -> str:
        """The model the spec names (``gpt-4o`` of ``openai:gpt-4o``), as the price table looks it up."""
        return self.spec.partition(":")[2] if self.spec.startswith("openai:") else self.spec

    def count(
        self, usage: Mapping[str, Mapping[str, Any]] | None, node: str, replies: Sequence[Any]
    ) -> dict[str, dict[str, Any]] | None:
        """``usage`` with the token counts (and cost) of ``node``'s ``replies`` added; None when they report none."""
        return add_usage(usage, node, replies, model=self.model_name, prices=self.prices)

    def structured(
        self, node: str, schema: type[_Schema], messages: Sequence[BaseMessage], *, replies: list[AIMessage]
    ) -> _Schema:
        """``node``'s model's answer as a ``schema`` value; each raw reply is appended to ``replies`` (for usage).

        An OpenAI-compatible server is asked through structured output (``response_format``
        json_schema) first. A server that refuses it (400/422 naming it) or answers with
        something that is not JSON is asked again with a forced call of a tool named after the
        schema, and is not asked for structured output again in this process. Other models
        (offline, scripted) answer the forced tool call directly. An answer that does not
        validate raises pydantic's ``ValidationError``; one without the call, ``ValueError``.
        The structured call is tagged ``nostream``: its JSON is not shown as tokens.
        """
        model = self.chat_model(node)
        key: tuple[str, str] | None = getattr(model, "structured_output_key", None)
        with _NO_STRUCTURED_LOCK:
            try_structured = key is not None and key not in _NO_STRUCTURED_OUTPUT
        if key is not None and try_structured:
            json_schema = {"title": schema.__name__, **schema.model_json_schema()}
            try:
                # langchain warns where it knows a model lacks structured output (and uses a tool call
                # itself), and before raising a refusal we handle here: nothing for the user to act on
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    asking = model.with_structured_output(json_schema, method="json_schema", include_raw=True)
                    out: Any = asking.with_config(tags=[_NOSTREAM]).invoke(list(messages))
            except ModelRequestError as exc:
                if not structured_output_refused(exc):
                    raise
                out = None
            if out is not None:
                raw = out["raw"]
                if isinstance(raw, AIMessage):
                    replies.append(raw)
                if out.get("parsing_error") is None and isinstance(out.get("parsed"), dict):
                    return schema.model_validate(out["parsed"])
            with _NO_STRUCTURED_LOCK:
                _NO_STRUCTURED_OUTPUT.add(key)
        bound = model.bind_tools([schema], tool_choice=schema.__name__).with_config(tags=[_NOSTREAM])
        reply = bound.invoke(list(messages))
        if isinstance(reply, AIMessage):
            replies.append(reply)
        calls = [c for c in getattr(reply, "tool_calls", []) if c["name"] == schema.__name__]
        if not calls:
            raise ValueError(f"the {node} model answered without a {schema.__name__}")
        return schema.model_validate(calls[0]["args"])


def resolve_model(
    spec: str, *, nodes: Sequence[str], egress: Sequence[str] | None = None, settings: Settings | None = None
) -> ModelProvider:
    """A provider for ``spec``; ``UsageError`` naming the spec and the allowed forms.

    ``egress`` is the allow-list an ``openai:`` client's base URL is checked against (default:
    the settings' list); a URL off it is refused with ``EgressDeniedError`` before any client exists.
    ``settings`` (default: read from the environment) give an ``openai:`` client its base URL,
    timeout, retries and price table (a bad price table is a ``UsageError`` naming the file).
    """
    spec = spec.strip()
    if spec == "offline":
        return ModelProvider(spec=spec, offline=True, _shared=OfflineChatModel())
    kind, _, rest = spec.partition(":")
    if kind == "scripted" and rest:
        script = load_script(Path(rest))
        unknown = sorted(set(script) - set(nodes))
        if unknown:
            raise UsageError(f"script {rest} names unknown node(s) {unknown}; allowed: {', '.join(nodes)}")
        return ModelProvider(
            spec=spec,
            _per_node={
                node: ScriptedChatModel(responses=steps, name_in_errors=f"the script of {rest} for node {node!r}")
                for node, steps in script.items()
            },
        )
    if kind == "openai" and rest:
        settings = settings or Settings()
        prices = load_prices(settings.llm_prices) if settings.llm_prices is not None else None
        return ModelProvider(spec=spec, _shared=_guarded_openai(rest, egress, settings), prices=prices)
    raise UsageError(f"unknown model spec {spec!r}; {MODEL_SPEC_HELP}")
