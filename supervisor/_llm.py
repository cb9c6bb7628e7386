"""The LLM layer: model spec strings, the offline planner model, and the request switch.

Specs: ``offline`` (deterministic planner, no key, no network), ``scripted:PATH`` (replays
a script per node) and ``openai:MODEL`` (langchain-openai; honours ``OPENAI_API_KEY`` and
``OPENAI_BASE_URL``, whose host must be on the egress allow-list). ``MLOPS_ALLOW_MODEL_REQUESTS=0`` refuses every real model request
at request time; the test suite sets it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from mlops_supervisor._planner import PlannedCommand, parse_command
from mlops_supervisor._settings import Settings
from mlops_supervisor.policies import ModelRequestsNotAllowedError, UsageError
from mlops_supervisor.policies.egress import EgressDeniedError, allowed_destinations, egress_refusal
from mlops_supervisor.testing import ScriptedChatModel, as_chunk, load_script

__all__ = ["ModelProvider", "OfflineChatModel", "model_requests_allowed", "resolve_model"]

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


def _guarded_openai(model: str, egress: Sequence[str] | None = None) -> BaseChatModel:
    from langchain_openai import ChatOpenAI

    class GuardedChatOpenAI(ChatOpenAI):
        """ChatOpenAI that refuses to send anything while model requests are switched off."""

        def _refuse_if_blocked(self) -> None:
            if not model_requests_allowed():
                raise ModelRequestsNotAllowedError(
                    f"a request to openai:{self.model_name} was refused: MLOPS_ALLOW_MODEL_REQUESTS is off"
                )

        def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
            self._refuse_if_blocked()
            return super()._generate(*args, **kwargs)

        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            self._refuse_if_blocked()
            yield from super()._stream(*args, **kwargs)

        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            self._refuse_if_blocked()
            return await super()._agenerate(*args, **kwargs)

    if not os.environ.get("OPENAI_API_KEY"):
        raise UsageError(
            f"model openai:{model} needs OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible server); "
            "use --model offline to run without a key"
        )
    base_url, allowed = _llm_destination(egress)
    refusal = egress_refusal(base_url, allowed)
    if refusal is not None:
        raise EgressDeniedError(
            f"the client for openai:{model} was not built: {refusal} (the LLM base URL is set by "
            "MLOPS_LLM_BASE_URL or OPENAI_BASE_URL)"
        )
    # the URL just checked, given explicitly: the client must not pick another one from its own defaults
    return GuardedChatOpenAI(model=model, temperature=0, max_retries=1, base_url=base_url)


def _llm_destination(egress: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """The base URL the LLM client would reach and the egress allow-list it is checked against.

    The URL is the configured one (``MLOPS_LLM_BASE_URL``/``OPENAI_BASE_URL``), else the one the
    client library would take from ``OPENAI_API_BASE``, else OpenAI's. The list is ``egress`` when
    given, else the settings': loopback, the tracking server, the configured LLM URL, ``MLOPS_EGRESS_ALLOW``.
    """
    settings = Settings()
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

    def chat_model(self, node: str) -> BaseChatModel:
        """The model that drives ``node`` (``supervisor`` or a specialist's name)."""
        if node in self._per_node:
            return self._per_node[node]
        if self._shared is not None:
            return self._shared
        return ScriptedChatModel(responses=[], name_in_errors=f"the script of {self.spec} for node {node!r}")


def resolve_model(spec: str, *, nodes: Sequence[str], egress: Sequence[str] | None = None) -> ModelProvider:
    """A provider for ``spec``; ``UsageError`` naming the spec and the allowed forms.

    ``egress`` is the allow-list an ``openai:`` client's base URL is checked against (default:
    the settings' list); a URL off it is refused with ``EgressDeniedError`` before any client exists.
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
        return ModelProvider(spec=spec, _shared=_guarded_openai(rest, egress))
    raise UsageError(f"unknown model spec {spec!r}; {MODEL_SPEC_HELP}")
