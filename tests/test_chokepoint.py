"""One chokepoint: every mutating tool and every public entry point that changes state, called directly, is decided and audited, and does nothing its gate or approval would not allow."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mlops_supervisor import Supervisor
from mlops_supervisor.policies import GateRefusedError, MlopsSupervisorError, UsageError
from mlops_supervisor.tools import GovernedTool
from mlops_supervisor.tools.core import using_store
from mlops_supervisor.tools.serving import LocalBackend
from mlops_supervisor.tools.serving._processes import alive as _alive
from tests.conftest import CliRun
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
ENTRY_POINTS = ("restore_endpoints", "stop_endpoints")  # what Supervisor.up / down and the CLI's up / down call


@dataclasses.dataclass(frozen=True)
class Base:
    ws: Path
    spec: Path
    run_id: str


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """A workspace whose pipeline ran to `register` (version 1: evaluated, challenger), plus version 2, never evaluated."""
    root = tmp_path_factory.mktemp("chokepoint")
    ws = root / "ws"
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"])
    with Supervisor(ws, user="alice") as sup:
        result = sup.run_pipeline(spec, stop_after="register")
        assert result.status == "done", result.report.summary
        run_id = next(o.output for o in result.outputs if o.tool == "train_model")["best"]["run_id"]
        assert sup.call("register_model", model=MODEL, run_id=run_id)["version"] == 2
    return Base(ws=ws, spec=spec, run_id=run_id)


@pytest.fixture
def ws(base: Base, tmp_path: Path) -> Iterator[Path]:
    """A private copy of ``base``'s workspace; whatever it serves is stopped afterwards."""
    copy = tmp_path / "ws"
    shutil.copytree(base.ws, copy)
    yield copy
    LocalBackend.for_workspace(copy).down()


def _registry_state(ws: Path) -> tuple[list[int], dict[str, int]]:
    """The registered versions of MODEL and its aliases."""
    with using_store(f"sqlite:///{ws / 'mlflow.db'}") as client:
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'"))
        aliases = {alias: int(version) for alias, version in client.get_registered_model(MODEL).aliases.items()}
    return versions, aliases


def _new_records(sup: Supervisor, seen: int) -> list[dict[str, Any]]:
    return list(sup.audit.records())[seen:]


def _count(sup: Supervisor) -> int:
    return sum(1 for _ in sup.audit.records())


def _denying(tmp_path: Path, tools: list[str]) -> Path:
    path = tmp_path / "deny.yaml"
    path.write_text(yaml.safe_dump({"tools": {"denied": tools}}), "utf-8")
    return path


def _typed_sample(prop: dict[str, Any]) -> Any:
    """A value of the JSON-schema type ``prop`` names."""
    if "enum" in prop:
        return prop["enum"][0]
    if "anyOf" in prop:
        return _typed_sample(next(p for p in prop["anyOf"] if p.get("type") != "null"))
    kind = prop.get("type")
    samples: dict[str, Any] = {"integer": prop.get("minimum", 1), "number": 1.0, "boolean": False, "array": []}
    return samples.get(str(kind), "x")


def _sample_args(governed: GovernedTool, base: Base) -> dict[str, Any]:
    """Arguments ``governed``'s schema accepts, from the schema alone (values the workspace knows where the name says)."""
    known: dict[str, Any] = {"model": MODEL, "version": 1, "run_id": base.run_id, "spec": str(base.spec)}
    schema = governed.tool.args_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    json_schema = schema.model_json_schema()
    required = set(json_schema.get("required", []))
    args = {
        name: known.get(name, _typed_sample(prop))
        for name, prop in json_schema.get("properties", {}).items()
        if name in required or name in known
    }
    problem = governed.validate_args(args)
    assert problem is None, f"extend _sample_args for {governed.name}: {problem}"
    return args


def test_every_mutating_tool_and_entry_point_called_directly_is_decided_and_audited(
    base: Base, ws: Path, tmp_path: Path
) -> None:
    """Each mutating tool in the registry, denied by the policy: `.tool.invoke` and `call` both refuse, each with a decision line, and no body runs."""
    with Supervisor(ws, user="alice") as probe:
        mutating = sorted(g.name for g in probe.tools if g.mutates)
    # the enumeration is the registry's, not a list here; these only show it is not empty or partial
    assert {"train_model", "evaluate_model", "remove_alias", "advance_canary", *ENTRY_POINTS} <= set(mutating)
    before = _registry_state(ws)
    with Supervisor(ws, user="alice", policy=_denying(tmp_path, mutating)) as sup:
        entries = {
            "tool.invoke": lambda name, args: sup.tools.get(name).tool.invoke(args),
            "call": lambda name, args: sup.call(name, **args),
        }
        seen = _count(sup)
        for name in mutating:
            args = _sample_args(sup.tools.get(name), base)
            for entry, invoke in entries.items():
                with pytest.raises(GateRefusedError) as refused:
                    invoke(name, args)
                assert refused.value.decision.reason_code == "tool_denied_by_policy", (name, entry)
                records = _new_records(sup, seen)
                seen += len(records)
                trail = [(r["event"], r["action"], r["decision"]) for r in records]
                assert trail == [("decision", name, "deny")], entry
                assert (records[0]["requester"], records[0]["origin"]) == ("alice", "library")
        for operation in (sup.up, sup.down):
            with pytest.raises(GateRefusedError):
                operation(None)
        records = _new_records(sup, seen)
        assert [(r["event"], r["action"], r["decision"]) for r in records] == [
            ("decision", "restore_endpoints", "deny"),
            ("decision", "stop_endpoints", "deny"),
        ]
    assert _registry_state(ws) == before


def test_an_unrouted_mutating_tool_refuses_and_runs_nothing() -> None:
    """A mutating GovernedTool exposes only its entry: not routed through a chokepoint, it refuses; so does a copy."""
    ran: list[str] = []

    class Args(BaseModel):
        model: str

    def body(model: str) -> str:
        ran.append(model)
        return "changed"

    governed = GovernedTool.from_function("change", "changes state", Args, body, mutates=True)
    for tool in (governed, dataclasses.replace(governed, gate=None), GovernedTool(tool=governed.tool, mutates=True)):
        with pytest.raises(UsageError, match="not routed through a chokepoint"):
            tool.tool.invoke({"model": "m"})
    assert ran == []
    read = GovernedTool.from_function("read", "reads", Args, body, mutates=False)
    assert read.tool.invoke({"model": "m"}) == "changed"  # read-only tools keep their plain, cheap path


def test_remove_alias_called_directly_is_refused_until_asked_with_an_approval(ws: Path) -> None:
    """The default policy holds remove_alias: a direct call is refused (ask instead) and the challenger alias stays."""
    with Supervisor(ws, user="alice") as sup:
        for invoke in (
            lambda: sup.tools.get("remove_alias").tool.invoke({"model": MODEL, "alias": "challenger"}),
            lambda: sup.call("remove_alias", model=MODEL, alias="challenger"),
        ):
            seen = _count(sup)
            with pytest.raises(GateRefusedError) as refused:
                invoke()
            assert refused.value.decision.reason_code == "approval_required"
            assert "ask" in str(refused.value) and "signed approval" in str(refused.value)
            records = _new_records(sup, seen)
            assert [(r["event"], r["action"], r["reason_code"]) for r in records] == [
                ("decision", "remove_alias", "approval_required")
            ]
    assert _registry_state(ws)[1] == {"challenger": 1}


def test_deploy_of_an_unevaluated_version_called_directly_starts_nothing(ws: Path) -> None:
    """Version 2 was never evaluated: the gate over evidence read now refuses before the body runs; nothing serves."""
    with Supervisor(ws, user="alice") as sup:
        seen = _count(sup)
        with pytest.raises(GateRefusedError) as refused:
            sup.tools.get("deploy_model").tool.invoke({"model": MODEL, "version": 2})
        records = _new_records(sup, seen)
    assert refused.value.decision.reason_code == "evaluation_missing"
    assert [(r["event"], r["decision"]) for r in records] == [("decision", "deny")]
    assert LocalBackend.for_workspace(ws).models() == []


def test_promotion_called_directly_passes_the_chokepoint_and_its_body_refuses_without_an_approval(ws: Path) -> None:
    """promote_model's gate binds it to an approval its body verifies: the call runs, the body refuses, no champion."""
    with Supervisor(ws, user="alice") as sup:
        seen = _count(sup)
        with pytest.raises(GateRefusedError):
            sup.call("promote_model", model=MODEL, version=1)
        records = _new_records(sup, seen)
    assert [(r["event"], r.get("decision"), r.get("outcome")) for r in records] == [
        ("decision", "allow", None),
        ("tool_call", None, None),
        ("decision", "deny", None),
        ("tool_result", None, "refused"),
    ]
    assert len({r["call_id"] for r in records}) == 1
    assert "champion" not in _registry_state(ws)[1]


def test_a_direct_call_leaves_the_trail_a_graph_call_leaves_and_the_graph_decides_once(base: Base, ws: Path) -> None:
    """evaluate_model called directly and register_model asked of the graph: decision, tool_call, tool_result each, once."""
    with Supervisor(ws, user="alice") as sup:
        seen = _count(sup)
        assert sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": 2})
        direct = [r for r in _new_records(sup, seen) if r.get("action") == "evaluate_model"]
        result = sup.ask(f'call register_model {{"model": "{MODEL}", "run_id": "{base.run_id}"}}')
        assert result.status == "done", result.report.summary
        graph = [r for r in sup.audit.records() if r.get("thread_id") == result.thread_id and r.get("action")]
    assert [r["event"] for r in direct] == ["decision", "tool_call", "tool_result"]
    assert [r["event"] for r in graph] == ["decision", "tool_call", "tool_result"]
    assert {(r["origin"], r["requester"]) for r in direct} == {("library", "alice")}
    assert {(r.get("origin"), r["requester"]) for r in graph[1:]} == {("graph", "alice")}
    assert direct[-1]["outcome"] == graph[-1]["outcome"] == "ok"
    assert len(direct[-1]["output_sha256"]) == len(graph[-1]["output_sha256"]) == 64
    assert _registry_state(ws)[0] == [1, 2, 3]


def _wait(condition: Any, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_up_and_down_are_decided_and_audited_from_the_cli_and_the_library(
    ws: Path, tmp_path: Path, cli: CliRun
) -> None:
    """`down` denied by the policy stops nothing (exit 3); `up` restarts a killed router; `down` stops all: each audited."""
    with using_store(f"sqlite:///{ws / 'mlflow.db'}") as client:
        source = client.get_model_version(MODEL, "1").source
    backend = LocalBackend.for_workspace(ws)
    status = backend.deploy(MODEL, 1, source, weight=100)
    router, server = status["router"]["pid"], status["versions"][1]["pid"]

    refused = cli("down", "--json", ws=ws, policy=_denying(tmp_path, ["stop_endpoints"]))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "refused" in refused.stderr and "stop_endpoints" in refused.stderr
    assert _alive(router) and _alive(server)

    os.kill(router, signal.SIGKILL)
    assert _wait(lambda: not backend.status(MODEL)["router"]["alive"])
    restarted = cli("up", MODEL, "--json", ws=ws)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    (restored,) = json.loads(restarted.stdout)["restored"]
    assert restored["restarted"] == ["router"]

    with Supervisor(ws, user="alice") as sup:
        (stopped,) = sup.down()
        records = [r for r in sup.audit.records() if r.get("action") in ENTRY_POINTS]
    assert stopped["stopped"] == 2
    assert _wait(lambda: not _alive(server))
    assert [(r["event"], r["action"], r["origin"], r.get("decision") or r.get("outcome")) for r in records] == [
        ("decision", "stop_endpoints", "cli", "deny"),
        ("decision", "restore_endpoints", "cli", "allow"),
        ("tool_call", "restore_endpoints", "cli", None),
        ("tool_result", "restore_endpoints", "cli", "ok"),
        ("decision", "stop_endpoints", "library", "allow"),
        ("tool_call", "stop_endpoints", "library", None),
        ("tool_result", "stop_endpoints", "library", "ok"),
    ]
    assert {r["requester"] for r in records} == {"alice"}


SECRET = "sk-proj-CANARYcanaryCANARYcanary0042"


def test_a_direct_call_is_audited_with_its_arguments_redacted(workspace: Path) -> None:
    """`call` decides and audits read-only tools too; a secret in its arguments is refused (secret_in_arguments) and reaches no audit line; unknown names are usage errors."""
    with Supervisor(workspace, user="alice") as sup:
        with pytest.raises(GateRefusedError, match=r"hold a secret \(API_KEY in 'source'\)"):
            sup.call("load_dataset", source=f"/nowhere/{SECRET}.csv")
        with pytest.raises(MlopsSupervisorError):
            sup.call("load_dataset", source="/nowhere/data.csv")
        with pytest.raises(UsageError, match="no tool named 'drop_everything'"):
            sup.call("drop_everything")
        records = [r for r in sup.audit.records() if r.get("action") == "load_dataset"]
    assert [r["event"] for r in records] == ["decision", "decision", "tool_call", "tool_result"]
    assert (records[0]["decision"], records[0]["reason_code"]) == ("deny", "secret_in_arguments")
    assert "<API_KEY>" in records[0]["args"]["source"]
    assert records[-1]["outcome"] in {"invalid_input", "error"}
    assert SECRET not in (workspace / "audit.jsonl").read_text("utf-8")
