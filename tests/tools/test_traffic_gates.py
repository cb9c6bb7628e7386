"""Traffic behind the gates, on real servers and a real MLflow store: approvals, canary windows, staging, the policy.

The workspace's policy asks for small canaries (10 requests a step, 30 s of bake time) so a few
hundred requests climb them; time is the supervisor's injected clock, moved past each window.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops_supervisor import RunResult, Supervisor
from mlops_supervisor.policies import GateRefusedError
from mlops_supervisor.testing import KeyRing, install_policy
from mlops_supervisor.tools.core import using_store
from mlops_supervisor.tools.serving import LocalBackend
from tests.conftest import champion_of, store_client
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
# Latency is not these tests' subject, and a freshly started server on a busy machine can be several
# times slower than a warm one: the p95 ratio is left loose so only the gates under test decide.
CANARY = {
    "min_steps": 1,
    "max_first_step": 25,
    "min_requests": 10,
    "min_bake_seconds": 30,
    "max_p95_latency_ratio": 100,
}
DEPLOYMENT = {
    "canary_steps": [20, 50, 100],
    "analysis": {"window_seconds": 30, "min_requests": 10, "max_p95_latency_ratio": 100},
}


@dataclass
class Clock:
    """The time the tools and gates read; a test moves it on."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    """Keys of alice (who asks) and carol (who approves), shared by the module's workspaces."""
    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, ring: KeyRing) -> Path:
    """A workspace under a policy with small canaries: versions 1 and 2 of a model, both evaluated, none served."""
    root = tmp_path_factory.mktemp("traffic")
    ws = root / "ws"
    install_policy(ws, ring.policy(approvers=["carol"], people=["alice"], canary=CANARY), admin="carol", keys=ring)
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"], deployment=DEPLOYMENT)
    with Supervisor(ws, user="alice", key=ring.path("alice")) as sup:
        result = sup.run_pipeline(spec, stop_after="evaluate")
        assert result.status == "done", result.report.summary
        run_id = next(o.output for o in result.outputs if o.tool == "train_model")["best"]["run_id"]
        sup.tools.get("register_model").tool.invoke({"model": MODEL, "run_id": run_id})
        sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": 2})
    return ws


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of ``base``; whatever it serves is stopped afterwards."""
    copy = tmp_path / "ws"
    shutil.copytree(base, copy)
    yield copy
    LocalBackend.for_workspace(copy).down()


def _sup(ws: Path, ring: KeyRing, user: str, clock: Clock | None = None) -> Supervisor:
    return Supervisor(ws, user=user, key=ring.path(user), clock=clock)


def _client(ws: Path) -> Any:
    return store_client(ws)


def _champion(ws: Path) -> int | None:
    return champion_of(ws, MODEL)


def _approved(ws: Path, ring: KeyRing, request: str, clock: Clock | None = None) -> RunResult:
    """``request`` asked by alice, held for approval, approved by carol: carol's result."""
    with _sup(ws, ring, "alice", clock) as sup:
        held = sup.ask(request)
    assert held.status == "awaiting_approval", held.report.summary
    with _sup(ws, ring, "carol", clock) as sup:
        done = sup.approve(held.thread_id, reason="evidence reviewed")
    assert done.status == "done", done.report.summary
    return done


def _output(result: RunResult, tool: str) -> dict[str, Any]:
    (output,) = [o.output for o in result.outputs if o.tool == tool and o.outcome == "ok"]
    assert isinstance(output, dict)
    return output


def _weights(ws: Path) -> dict[int, int]:
    return {v: s["weight"] for v, s in LocalBackend.for_workspace(ws).status(MODEL)["versions"].items()}


def _nothing_served(ws: Path) -> bool:
    backend = LocalBackend.for_workspace(ws)
    return backend.models() == [] and not list((ws / "serving").glob("*/procs/*.json"))


def _traffic(url: str, ws: Path, n: int) -> Counter[str]:
    """``n`` single-row requests of held-out rows; the versions that answered."""
    import pandas as pd

    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet")))
    rows = json.loads(test[[c for c in test.columns if c not in ("class", "sex")]].head(50).to_json(orient="records"))
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            answer = client.post(f"{url}/invocations", json={"dataframe_records": [rows[i % len(rows)]]})
            assert answer.status_code == 200, answer.text
            seen[answer.headers["x-model-version"]] += 1
    return seen


def test_a_first_production_deploy_waits_for_an_approval_then_makes_the_champion(ws: Path, ring: KeyRing) -> None:
    """`deploy MODEL version 1` with nothing serving is held (nothing starts); approved, v1 serves and is champion."""
    with _sup(ws, ring, "alice") as sup:
        held = sup.ask(f"deploy {MODEL} version 1")
    assert held.status == "awaiting_approval", held.report.summary
    assert [(d.action, d.decision) for d in held.decisions if d.action == "deploy_model"] == [
        ("deploy_model", "needs_approval")
    ]
    assert _nothing_served(ws) and _champion(ws) is None
    with _sup(ws, ring, "carol") as sup:
        done = sup.approve(held.thread_id, reason="first release")
    assert done.status == "done", done.report.summary
    deployed = _output(done, "deploy_model")
    assert (deployed["role"], deployed["weight"], deployed["champion"]) == ("first", 100, {"previous": None})
    assert _champion(ws) == 1 and _weights(ws) == {1: 100}
    tags = _client(ws).get_model_version(MODEL, "1").tags
    assert (tags["mlops.approval.approver"], tags["mlops.approval.requester"]) == ("carol", "alice")
    assert "mlops.deployed.at" in tags and tags["mlops.canary.passed"] == "pending"
    assert _traffic(deployed["url"], ws, 5) == Counter({"1": 5})


def test_a_direct_call_of_a_first_deploy_without_an_approval_starts_nothing(ws: Path, ring: KeyRing) -> None:
    """The tool body re-checks the champion gate: no approval, no server, no alias, no tag; the gate asks for one."""
    with _sup(ws, ring, "alice") as sup:
        deploy = sup.tools.get("deploy_model")
        assert deploy.gate is not None
        gated = deploy.gate({"model": MODEL, "version": 1})
        assert gated.decision.allowed and gated.approval_action == "champion" and gated.evidence_digest
        with pytest.raises(GateRefusedError) as refused:
            deploy.tool.invoke({"model": MODEL, "version": 1})
    assert refused.value.decision.reason_code.value == "approval_missing"
    assert _nothing_served(ws) and _champion(ws) is None
    assert "mlops.deployed.at" not in _client(ws).get_model_version(MODEL, "1").tags


def test_a_canary_climbs_after_each_window_holds_its_last_step_and_only_promotion_takes_it_to_100(
    ws: Path, ring: KeyRing
) -> None:
    """20 % then 50 %, each only once its 30 s have passed; passing at 50 % holds there; the promotion makes it 100."""
    clock = Clock(datetime.now(UTC))
    first = _output(_approved(ws, ring, f"deploy {MODEL} version 1", clock), "deploy_model")
    url = first["url"]
    with _sup(ws, ring, "alice", clock) as sup:
        step = sup.tools.get("advance_canary").tool

        def advance() -> dict[str, Any]:
            outcome: dict[str, Any] = json.loads(step.invoke({"model": MODEL}))
            return outcome

        _traffic(url, ws, 20)
        assert advance()["reasons"][0].startswith("window open: 0 s of 30 s")
        clock.tick(31)
        smoke = advance()
        assert (smoke["verdict"], smoke["canary"], smoke["weight"]) == ("pass", "passed", 100)

        deployed = sup.ask(f"deploy {MODEL} version 2")  # a canary beside version 1: the challenger gate alone
        assert deployed.status == "done", deployed.report.summary
        canary = _output(deployed, "deploy_model")
        assert (canary["role"], canary["weight"], canary["steps"], canary["stable"]) == ("canary", 20, [20, 50], 1)
        assert _weights(ws) == {1: 80, 2: 20}

        _traffic(url, ws, 150)
        clock.tick(12)
        early = advance()
        assert (early["verdict"], early["reasons"][0]) == ("inconclusive", "window open: 12 s of 30 s")
        assert _weights(ws) == {1: 80, 2: 20}
        clock.tick(19)
        assert (advance()["verdict"], _weights(ws)) == ("pass", {1: 50, 2: 50})

        _traffic(url, ws, 80)
        clock.tick(31)
        last = advance()
        assert (last["verdict"], last["canary"], last["weight"]) == ("pass", "passed", 50)
        assert _weights(ws) == {1: 50, 2: 50}  # held: above the last canary step only through the champion gate
        assert _client(ws).get_model_version(MODEL, "2").tags["mlops.canary.passed"] == "true"
        clock.tick(60)
        assert advance()["verdict"] == "passed" and _weights(ws) == {1: 50, 2: 50}

    promoted = _output(_approved(ws, ring, f"promote {MODEL} version 2 to production", clock), "promote_model")
    assert promoted["previous"] == 1 and _champion(ws) == 2
    assert _weights(ws) == {1: 0, 2: 100}


def test_a_staging_deploy_has_its_own_endpoint_and_leaves_production_alone(ws: Path, ring: KeyRing) -> None:
    """Staging needs a passing evaluation only, gets its own router and URL, and production's weights stay put."""
    backend = LocalBackend.for_workspace(ws)
    with using_store(f"sqlite:///{ws / 'mlflow.db'}") as client:
        source = client.get_model_version(MODEL, "1").source
    production = backend.deploy(MODEL, 1, source, weight=100)
    with _sup(ws, ring, "alice") as sup:
        result = sup.ask(f"deploy {MODEL} version 2 to staging")
        assert result.status == "done", result.report.summary
        status = json.loads(sup.tools.get("endpoint_status").tool.invoke({"model": MODEL}))
        endpoints = {e.model: e for e in sup.endpoints()}
    staged = _output(result, "deploy_model")
    assert [d.decision for d in result.decisions if d.action == "deploy_model"] == ["allow"]
    assert (staged["target"], staged["endpoint"], staged["weight"]) == ("staging", f"{MODEL}@staging", 100)
    now = backend.status(MODEL)
    assert {v: s["weight"] for v, s in now["versions"].items()} == {1: 100}
    assert now["router"]["pid"] == production["router"]["pid"]
    assert staged["url"] != production["router"]["url"]
    assert _traffic(staged["url"], ws, 5) == Counter({"2": 5})
    assert _traffic(production["router"]["url"], ws, 5) == Counter({"1": 5})
    assert status["router"]["url"] == production["router"]["url"]
    assert status["staging"]["router"]["url"] == staged["url"] and list(status["staging"]["versions"]) == ["2"]
    assert set(endpoints) == {MODEL, f"{MODEL}@staging"} and endpoints[f"{MODEL}@staging"].url == staged["url"]
    assert _client(ws).get_model_version(MODEL, "2").tags.get("mlops.deployed.at") is None  # not in production


def test_a_deploy_whose_trained_spec_is_below_the_policy_in_force_is_refused(ws: Path, ring: KeyRing) -> None:
    """A policy tightened after training (50 requests a step) refuses the spec's 10 at the gate and in the body."""
    stricter = ring.policy(approvers=["carol"], people=["alice"], canary={**CANARY, "min_requests": 50})
    install_policy(ws, stricter, admin="carol", keys=ring)
    with _sup(ws, ring, "alice") as sup:
        asked = sup.ask(f"deploy {MODEL} version 1")
        with pytest.raises(GateRefusedError) as refused:
            sup.tools.get("deploy_model").tool.invoke({"model": MODEL, "version": 1})
    assert asked.status == "refused", asked.report.summary
    (decision,) = [d for d in asked.decisions if d.action == "deploy_model"]
    assert decision.reason_code == "canary_below_policy"
    assert "deployment.analysis.min_requests is 10; the policy asks for at least 50" in decision.message
    assert refused.value.decision.reason_code.value == "canary_below_policy"
    assert _nothing_served(ws) and _champion(ws) is None
