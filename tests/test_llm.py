"""The LLM layer: scripted doubles, the request switch, and the OpenAI path over a real HTTP server.

The ``openai:`` tests drive the real openai SDK (through langchain-openai) against ``OpenAIStub``,
a chat-completions server on loopback, scripted per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from mlops_supervisor import Supervisor
from mlops_supervisor._llm import resolve_model
from mlops_supervisor._usage import load_prices, usage_line
from mlops_supervisor.policies import ModelRequestsNotAllowedError, ScriptExhaustedError, UsageError
from mlops_supervisor.testing import OpenAIStub, Reply, ScriptedChatModel, StubRequest
from tests.conftest import store_client

KEY = "sk-test-local-only-0123456789abcdef"


def test_scripted_model_binds_streams_and_runs_out_loudly() -> None:
    """bind_tools works, streaming yields the tool call, and an exhausted script raises."""
    model = ScriptedChatModel(
        responses=[
            AIMessage(content="", tool_calls=[{"name": "show_policy", "args": {}, "id": "c1", "type": "tool_call"}]),
        ]
    )
    bound = model.bind_tools([])
    chunks = list(bound.stream([HumanMessage("go")]))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.tool_calls[0]["name"] == "show_policy"
    with pytest.raises(ScriptExhaustedError, match="response 2 but its script holds 1"):
        model.invoke([HumanMessage("again")])


def test_unknown_script_node_is_named(tmp_path: Path) -> None:
    """A script naming a node the graph does not have is refused with the allowed names."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"planner": [{"content": "x"}]}), "utf-8")
    with pytest.raises(UsageError, match=r"unknown node\(s\) \['planner'\]; allowed: supervisor, data"):
        resolve_model(f"scripted:{path}", nodes=("supervisor", "data"))


# --- the OpenAI path over the wire -------------------------------------------------------------


def _policy_flow(
    *, tool: str = "show_policy", args: dict[str, Any] | None = None, agent: str = "security", answer: str = ""
) -> Callable[[StubRequest], Reply]:
    """A server that routes to ``agent``, has it call ``tool``, reports, and finishes: each step chosen from
    the request (a Route is asked for; a tool's result came back; else the specialist's first turn)."""
    routed = 0

    def respond(request: StubRequest) -> Reply:
        nonlocal routed
        if request.structured or request.forced_tool == "Route":
            routed += 1
            if routed == 1:
                return Reply.route_to(agent, task="show the policy")
            return Reply.route_to("finish", answer="policy shown")
        if request.last_role == "tool":
            return Reply.text(answer or "The policy holds promote_model for approval. It names no approvers yet.")
        return Reply.tools((tool, args or {}))

    return respond


def test_the_stub_speaks_chat_completions_to_the_sdk() -> None:
    """OpenAIStub answers the plain openai SDK whole and streamed, with tool calls and usage, and refuses
    loudly what it was not scripted for."""
    import openai

    with OpenAIStub() as server:
        client = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0)
        server.push(
            Reply.text("hello", usage=(3, 1)),
            Reply.tools(("show_policy", {"verbose": True})),
            Reply.text("streamed text here", chunk_chars=5),
        )
        plain = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert plain.choices[0].message.content == "hello" and plain.usage is not None
        assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (3, 1)
        called = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "go"}])
        (call,) = called.choices[0].message.tool_calls or []
        assert call.function.name == "show_policy" and call.function.arguments == '{"verbose": true}'
        assert called.choices[0].finish_reason == "tool_calls"
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "stream"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed text here"
        assert chunks[-1].usage is not None and not chunks[-1].choices
        with pytest.raises(openai.BadRequestError, match="no reply scripted for request #3"):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "more"}])
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="m", input="x")
    assert [r.status for r in server.requests] == [200, 200, 200, 400, 404]
    assert [r.stream for r in server.requests[:3]] == [False, False, True]
    assert server.requests[2].usage is not None and server.requests[0].usage == (3, 1)
    assert server.requests[0].at <= server.requests[1].at


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    """A chat-completions server on loopback, with the client pointed at it (requests still switched off)."""
    with OpenAIStub() as server:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        yield server


@pytest.fixture
def live(stub: OpenAIStub, monkeypatch: pytest.MonkeyPatch) -> OpenAIStub:
    """``stub``, with model requests switched on (this test opts in)."""
    monkeypatch.setenv("MLOPS_ALLOW_MODEL_REQUESTS", "1")
    return stub


def test_openai_path_is_refused_while_switched_off(workspace: Path, stub: OpenAIStub) -> None:
    """With MLOPS_ALLOW_MODEL_REQUESTS=0 (the test default) no request leaves the process."""
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "failed"
    assert "MLOPS_ALLOW_MODEL_REQUESTS is off" in result.report.summary
    assert stub.requests == []


def test_switch_refuses_async_and_streaming_paths_too(stub: OpenAIStub) -> None:
    """ainvoke, astream and stream are refused like invoke while the switch is off."""
    model = resolve_model("openai:gpt-test", nodes=("supervisor",)).chat_model("supervisor")
    with pytest.raises(ModelRequestsNotAllowedError):
        list(model.stream([HumanMessage("hi")]))
    with pytest.raises(ModelRequestsNotAllowedError):
        asyncio.run(model.ainvoke([HumanMessage("hi")]))

    async def drain() -> None:
        async for _ in model.astream([HumanMessage("hi")]):
            pass

    with pytest.raises(ModelRequestsNotAllowedError):
        asyncio.run(drain())
    assert stub.requests == []


def test_async_paths_stream_over_the_wire(live: OpenAIStub) -> None:
    """Opted in, astream gets the answer in several chunks and ainvoke gets it whole, with its usage."""
    live.push(Reply.text("one two three four five", chunk_chars=4), Reply.text("whole", usage=(7, 2)))
    model = resolve_model("openai:gpt-test", nodes=("supervisor",)).chat_model("supervisor")

    async def run() -> tuple[list[Any], Any]:
        chunks = [c async for c in model.astream([HumanMessage("hi")])]
        return chunks, await model.ainvoke([HumanMessage("again")])

    chunks, whole = asyncio.run(run())
    assert len([c for c in chunks if c.content]) == 6
    assert "".join(str(c.content) for c in chunks) == "one two three four five"
    assert whole.content == "whole" and whole.usage_metadata["input_tokens"] == 7
    assert all(r.stream and r.include_usage for r in live.requests)


def test_routing_through_structured_output(workspace: Path, live: OpenAIStub) -> None:
    """The supervisor asks for its Route as json_schema structured output; the specialist's tool call goes
    through the policy node and the tool runs."""
    live.respond = _policy_flow()
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    assert [(d.agent, d.action, d.decision) for d in result.decisions] == [("security", "show_policy", "allow")]
    assert [o.tool for o in result.outputs] == ["show_policy"] and result.outputs[0].outcome == "ok"
    assert "policy shown" in result.report.summary
    routes = [r for r in live.requests if r.structured]
    assert len(routes) == 2
    assert all(r.response_format["json_schema"]["name"] == "Route" and not r.tools for r in routes)
    assert all(r.status == 200 and r.stream and r.include_usage for r in live.requests)
    specialist_call = next(r for r in live.requests if r.last_role == "tool")
    assert specialist_call.tools == [
        "verify_audit_chain",
        "show_policy",
        "scan_prompt_injection",
        "review_audit",
        "permission_matrix",
        "security_report",
    ]
    # the specialist saw the tool's output fenced as untrusted data
    assert '<untrusted-data tool="show_policy">' in specialist_call.messages[-1]["content"]


def test_routing_falls_back_to_a_tool_call_without_response_format(workspace: Path, live: OpenAIStub) -> None:
    """A server that refuses response_format (400) gets the forced Route tool call instead, and is not asked
    for structured output again in this process."""
    live.structured_output = False
    live.respond = _policy_flow()
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
        assert result.status == "done", result.report.summary
        assert [(d.action, d.decision) for d in result.decisions] == [("show_policy", "allow")]
        asked = [(r.status, r.structured, r.forced_tool) for r in live.requests if r.structured or r.forced_tool]
        # one refusal, then the first route by tool call; the second route goes straight to the tool call
        assert asked == [(400, True, None), (200, False, "Route"), (200, False, "Route")]
        before = len(live.requests)
        live.push(Reply.route_to("finish", answer="nothing to do"))
        again = sup.ask("anything else?")
    assert again.status == "done" and "nothing to do" in again.report.summary
    assert [r.forced_tool for r in live.requests[before:]] == ["Route"]


def test_routing_falls_back_when_the_answer_is_not_json(workspace: Path, live: OpenAIStub) -> None:
    """A server that takes response_format but answers prose gets the forced tool call next."""
    live.push(Reply.text("I would send this to the security agent."), Reply.route_to("finish", answer="done here"))
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    assert "done here" in result.report.summary
    assert [(r.structured, r.forced_tool) for r in live.requests] == [(True, None), (False, "Route")]
    # both calls were counted: the refused structured answer cost tokens too
    assert result.usage is not None and result.usage.nodes["supervisor"].calls == 2


def test_a_tool_off_the_allow_list_is_denied(workspace: Path, live: OpenAIStub) -> None:
    """The model proposes deploy_model from the security agent: the policy node denies it by its allow-list,
    the agent is told why, and the report says so."""
    live.respond = _policy_flow(
        tool="deploy_model", args={"model": "adult-income-classifier", "version": 1}, answer="I may not deploy."
    )
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("deploy the model")
    denied = [d for d in result.decisions if d.decision == "deny"]
    assert [(d.agent, d.action, d.reason_code) for d in denied] == [("security", "deploy_model", "not_in_allow_list")]
    assert result.status == "refused"
    assert "Refused by policy: `deploy_model` (not_in_allow_list)" in result.report.summary
    assert "**deny** (not_in_allow_list)" in result.report.verification
    told = next(r for r in live.requests if r.last_role == "tool")
    assert told.messages[-1]["content"].startswith("DENIED (not_in_allow_list)")
    assert result.outputs == []


def test_deploy_without_evaluation_is_refused_by_the_gate(workspace: Path, live: OpenAIStub) -> None:
    """The deployment agent proposes deploy_model of a version with no evaluation: the gate denies it with its
    reason code, nothing is deployed, and the request stops."""
    live.respond = _policy_flow(
        agent="deployment", tool="deploy_model", args={"model": "adult-income-classifier", "version": 1}
    )
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        client = store_client(workspace)
        experiment = client.create_experiment("adult", artifact_location=(workspace / "artifacts").as_uri())
        run = client.create_run(experiment, run_name="train")
        client.set_terminated(run.info.run_id)
        client.create_registered_model("adult-income-classifier")
        client.create_model_version(
            "adult-income-classifier",
            source=(workspace / "artifacts" / run.info.run_id).as_uri(),
            run_id=run.info.run_id,
        )
        result = sup.ask("deploy adult-income-classifier version 1")
    assert result.status == "refused", result.report.summary
    (denied,) = [d for d in result.decisions if d.decision == "deny"]
    assert denied.action == "deploy_model" and denied.agent == "deployment"
    assert denied.reason_code == "evaluation_missing", denied
    assert f"`deploy_model` ({denied.reason_code})" in result.report.summary
    assert result.outputs == []


def test_a_429_is_retried_after_its_retry_after(workspace: Path, live: OpenAIStub) -> None:
    """429 with Retry-After: 1 is retried by the SDK no sooner than a second later (its own backoff is 0.5 s)."""
    live.push(Reply.rate_limited(retry_after=1))
    live.respond = _policy_flow()
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    first, second = live.requests[:2]
    assert (first.status, second.status) == (429, 200)
    assert second.body == first.body
    assert second.at - first.at >= 1.0


def test_a_500_is_retried(workspace: Path, live: OpenAIStub) -> None:
    """A 500 is retried with backoff and the request goes on."""
    live.push(Reply.server_error(500), Reply.server_error(503))
    live.respond = _policy_flow()
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    assert [r.status for r in live.requests[:3]] == [500, 503, 200]
    assert live.requests[2].at - live.requests[0].at >= 0.375 + 0.75  # 0.5 s then 1 s, less 25% jitter


def test_retries_exhausted_fail_with_one_clear_message(
    workspace: Path, live: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still rate limited after MLOPS_LLM_MAX_RETRIES retries: the request fails, naming the model, the base
    URL, the status and what to do, never the key."""
    monkeypatch.setenv("MLOPS_LLM_MAX_RETRIES", "2")
    live.respond = lambda request: Reply.rate_limited(retry_after=0.05)
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "failed"
    assert [r.status for r in live.requests] == [429, 429, 429]
    summary = result.report.summary
    assert "the supervisor model failed: openai:gpt-test at " in summary
    assert live.url in summary
    assert "answered 429" in summary and "all 3 attempts" in summary and "MLOPS_LLM_MAX_RETRIES" in summary
    assert KEY not in summary and KEY not in result.model_dump_json()


def test_a_refusal_that_echoes_the_key_does_not_repeat_it(workspace: Path, live: OpenAIStub) -> None:
    """A 400 whose message quotes the API key fails at once (no retry) and the key is blanked in the message."""
    live.push(Reply.failure(400, f"unknown parameter; your key {KEY} is fine"))
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "failed"
    assert [r.status for r in live.requests] == [400]
    assert "answered 400" in result.report.summary and "the server refused the request" in result.report.summary
    assert KEY not in result.model_dump_json()
    written = [p for p in workspace.rglob("*") if p.is_file()]
    assert workspace / "audit.jsonl" in written
    assert not [p for p in written if KEY.encode() in p.read_bytes()]


def test_a_server_that_does_not_answer_times_out(
    workspace: Path, live: OpenAIStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server slower than MLOPS_LLM_TIMEOUT fails the request in about that time, with one message naming
    the model, the base URL and what to check."""
    monkeypatch.setenv("MLOPS_LLM_TIMEOUT", "0.5")
    monkeypatch.setenv("MLOPS_LLM_MAX_RETRIES", "1")
    live.respond = lambda request: Reply.text("too late", delay=10)
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        started = time.monotonic()
        result = sup.ask("show me the policy")
        took = time.monotonic() - started
    assert result.status == "failed"
    assert len(live.requests) == 2  # the first attempt and one retry
    assert took < 8  # two attempts that waited for the answer would take 20 s
    summary = result.report.summary
    assert f"openai:gpt-test at {live.url} did not answer within 0.5 s (2 attempts)" in summary
    assert "MLOPS_LLM_TIMEOUT" in summary and KEY not in summary


def test_specialist_tokens_stream_through_the_graph(workspace: Path, live: OpenAIStub) -> None:
    """In stream_mode "messages" a specialist's answer arrives as several AIMessageChunks tagged with its node;
    its tool call, streamed in pieces, still arrives whole; the route's JSON is not shown as tokens."""
    live.respond = _policy_flow(
        answer="The policy holds promote_model for approval. Deploys need an evaluation first.\nThat is all."
    )
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        thread_id, state = sup._start("show me the policy", None, mode="ask")
        graph = sup._graph(sup.model_spec)
        parts = list(graph.stream(state, sup._config(thread_id), stream_mode=["updates", "messages"]))
        result = sup._result(thread_id)
    assert result.status == "done", result.report.summary
    chunks = [
        (m, meta) for mode, (m, meta) in (p for p in parts if p[0] == "messages") if isinstance(m, AIMessageChunk)
    ]
    nodes = {meta["langgraph_node"] for _, meta in chunks}
    assert nodes == {"security"}  # the supervisor's Route is tagged nostream
    text = [m for m, _ in chunks if m.content]
    assert len(text) > 5
    assert "".join(str(m.content) for m in text).startswith("The policy holds promote_model")
    merged = chunks[0][0]
    for m, _ in chunks[1:]:
        if m.id == chunks[0][0].id:
            merged = merged + m
    assert merged.tool_calls == [{"name": "show_policy", "args": {}, "id": "call_stub1_0", "type": "tool_call"}]


def test_supervisor_stream_shows_the_model_text(workspace: Path, live: OpenAIStub) -> None:
    """Supervisor.stream turns the streamed chunks into Tokens events of the specialist, a sentence at a time."""
    live.respond = _policy_flow(answer="The policy holds promote_model for approval. Deploys need an evaluation.")
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        events = list(sup.stream("show me the policy"))
    tokens = [e for e in events if getattr(e, "kind", "") == "tokens"]
    assert [t.node for t in tokens] == ["security", "security"]
    assert tokens[0].text == "The policy holds promote_model for approval."
    assert events[-1].status == "done"


def test_token_counts_and_cost_reach_the_result_and_the_report(
    workspace: Path, live: OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each node's calls and tokens (from the usage chunk of each streamed answer) and their cost at the
    configured price table are in RunResult.usage and the report's Design section."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(yaml.safe_dump({"gpt-test": {"input": 2.5, "output": 10.0}}), "utf-8")
    monkeypatch.setenv("MLOPS_LLM_PRICES", str(prices))
    live.push(
        Reply.route_to("security", task="show the policy", usage=(400, 30)),
        Reply.tools(("show_policy", {}), usage=(300, 20)),
        Reply.text("Shown.", usage=(350, 5)),
        Reply.route_to("finish", answer="policy shown", usage=(410, 6)),
    )
    with Supervisor(workspace, model="openai:gpt-test") as sup:
        result = sup.ask("show me the policy")
    assert result.status == "done", result.report.summary
    assert live.pending == 0
    usage = result.usage
    assert usage is not None
    sup_calls, sec_calls = usage.nodes["supervisor"], usage.nodes["security"]
    assert (sup_calls.calls, sup_calls.input_tokens, sup_calls.output_tokens) == (2, 810, 36)
    assert (sec_calls.calls, sec_calls.input_tokens, sec_calls.output_tokens, sec_calls.total_tokens) == (
        2,
        650,
        25,
        675,
    )
    assert usage.total.total_tokens == 810 + 36 + 675
    assert usage.total.cost_usd == pytest.approx((1460 * 2.5 + 61 * 10.0) / 1e6)
    assert usage.price_table == str(prices)
    design = result.report.design
    assert (
        "Model usage: supervisor 2 calls 810 in / 36 out tokens; security 2 calls 650 in / 25 out tokens; "
        f"total 4 calls 1460 in / 61 out tokens (1521 tokens); cost $0.004260 at {prices}."
    ).replace("$0.004260", "$0.00426") in design


def test_offline_and_scripted_models_record_no_usage(workspace: Path, tmp_path: Path) -> None:
    """The offline planner and a scripted model report no tokens: no usage, and no usage line in the report."""
    script = tmp_path / "s.yaml"
    script.write_text(
        yaml.safe_dump(
            {
                "supervisor": [{"route": "security", "task": "show the policy"}, {"route": "finish", "answer": "ok"}],
                "security": [{"tool_calls": [{"name": "show_policy"}]}, {"content": "shown"}],
            }
        ),
        "utf-8",
    )
    with Supervisor(workspace, model=f"scripted:{script}") as sup:
        scripted = sup.ask("show me the policy")
    with Supervisor(workspace) as sup:
        offline = sup.ask("show policy")
    for result in (scripted, offline):
        assert result.status == "done", result.report.summary
        assert result.usage is None
        assert "Model usage" not in result.report.design
    assert scripted.outputs and offline.outputs


def test_usage_line_without_a_price_for_the_model() -> None:
    """A price table that does not name the model: tokens are shown, and the line says why there is no cost."""
    usage = {
        "supervisor": {"calls": 1, "input_tokens": 10, "output_tokens": 2, "total_tokens": 12, "price_table": "p.yaml"}
    }
    assert usage_line(usage) == (
        "Model usage: supervisor 1 call 10 in / 2 out tokens; total 1 call 10 in / 2 out tokens (12 tokens); "
        "no cost: the model is not in the price table p.yaml."
    )
    assert usage_line({}) == ""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- gpt\n", "holds list, not a mapping of models"),
        ("gpt-test: {input: 1}\n", "needs exactly the keys input and output"),
        ("gpt-test: {input: -1, output: 2}\n", "input is -1; a price is a number of US dollars >= 0"),
        ("gpt-test: {input: x, output: 2}\n", "input is 'x'"),
        ("{: [\n", "is not YAML or JSON"),
    ],
)
def test_a_bad_price_table_is_named(tmp_path: Path, text: str, problem: str) -> None:
    """A price table that is not model -> {input, output} is refused naming the file and what is wrong."""
    path = tmp_path / "prices.yaml"
    path.write_text(text, "utf-8")
    with pytest.raises(UsageError, match="price table") as caught:
        load_prices(path)
    assert str(path) in str(caught.value) and problem in str(caught.value)


def test_a_missing_price_table_stops_the_supervisor_before_anything_is_written(
    workspace: Path, stub: OpenAIStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLOPS_LLM_PRICES naming no file is a usage error when the supervisor is built; the workspace is not made."""
    monkeypatch.setenv("MLOPS_LLM_PRICES", str(tmp_path / "nope.yaml"))
    with pytest.raises(UsageError, match=r"nope.yaml \(MLOPS_LLM_PRICES\) does not exist"):
        Supervisor(workspace, model="openai:gpt-test")
    assert not workspace.exists()


def test_openai_without_key_is_a_usage_error(workspace: Path) -> None:
    """openai:MODEL without OPENAI_API_KEY names the variable and the offline alternative."""
    with pytest.raises(UsageError, match="needs OPENAI_API_KEY"):
        Supervisor(workspace, model="openai:gpt-test")
