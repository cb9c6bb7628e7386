"""The deployment agent's canary, promotion and rollback on Kubernetes, end to end, judged from a real Prometheus.

The cluster is the API emulator (``tests/_kube.py``) driven by the real ``kubernetes`` client
through the real tools and their chokepoint (a ``Supervisor`` whose settings name a kubeconfig for
the emulator and the Prometheus URL). The test plays the cluster's other parts: the Deployment
controller (what is applied is marked ready at once) and the data plane, which is this project's
real router and model servers on loopback (a ``LocalBackend`` of its own) given the weights the
backend wrote into the router's ConfigMap, as the router pods would read them. The session's real
Prometheus scrapes that router with the label ``model`` that a cluster's scrape config relabels
from the router pods; ``advance_canary`` judges from it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlops_supervisor import RunResult, Supervisor
from mlops_supervisor._settings import Settings
from mlops_supervisor.policies import RunError
from mlops_supervisor.testing import KeyRing, PrometheusServer, install_policy
from mlops_supervisor.tools.core import using_store
from mlops_supervisor.tools.serving import LocalBackend
from mlops_supervisor.tools.serving._manifests import ANN_EVIDENCE
from tests._kube import KubeEmulator
from tests.conftest import champion_of
from tests.test_pipeline import _adult_slice, small_spec

MODEL = "small-model"
NS = "ml"
DEPLOYMENTS, SERVICES, CONFIGMAPS = "apps/v1/deployments", "v1/services", "v1/configmaps"
CANARY = {
    "min_steps": 1,
    "max_first_step": 25,
    "min_requests": 10,
    "min_bake_seconds": 30,
    "max_p95_latency_ratio": 100,
}
# one canary step of 10 %: passing it holds there until the promotion (fewer rounds of traffic to wait for)
DEPLOYMENT = {
    "canary_steps": [10, 100],
    "analysis": {"window_seconds": 30, "min_requests": 10, "max_p95_latency_ratio": 100},
}
SERVING = {
    "target": "kubernetes",
    "kubernetes": {"namespace": NS, "image": "registry.example/mlops-supervisor:1.0", "ready_timeout_s": 20},
}


@dataclass
class Clock:
    """The time the tools and gates read; the test moves it past each bake window."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    """Keys of alice (who asks) and carol (who approves)."""
    return KeyRing(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, ring: KeyRing) -> Path:
    """Versions 1, 2 and 3 of a model trained from a spec served on Kubernetes, all evaluated, none deployed."""
    root = tmp_path_factory.mktemp("kube-flow")
    ws = root / "ws"
    install_policy(ws, ring.policy(approvers=["carol"], people=["alice"], canary=CANARY), admin="carol", keys=ring)
    spec = small_spec(root, _adult_slice(), data__sensitive_features=["sex"], deployment=DEPLOYMENT, serving=SERVING)
    with Supervisor(ws, user="alice", key=ring.path("alice")) as sup:
        result = sup.run_pipeline(spec, stop_after="evaluate")
        assert result.status == "done", result.report.summary
        run_id = next(o.output for o in result.outputs if o.tool == "train_model")["best"]["run_id"]
        for version in (2, 3):
            sup.tools.get("register_model").tool.invoke({"model": MODEL, "run_id": run_id})
            sup.tools.get("evaluate_model").tool.invoke({"model": MODEL, "version": version})
    return ws


@pytest.fixture
def ws(base: Path, tmp_path: Path) -> Path:
    """A private copy of ``base``."""
    copy = tmp_path / "ws"
    shutil.copytree(base, copy)
    return copy


@pytest.fixture
def emu(kube: KubeEmulator) -> KubeEmulator:
    """The emulator, its Deployment controller marking every applied Deployment ready at once."""

    def ready(resource: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        if resource != DEPLOYMENTS:
            return None
        replicas = obj["spec"]["replicas"]
        return {
            "observedGeneration": obj["metadata"]["generation"],
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
        }

    kube.k.controller = ready
    return kube


@pytest.fixture
def kubeconfig(emu: KubeEmulator, tmp_path: Path) -> Path:
    """A kubeconfig whose one context is the emulator (a bearer token, as a service account's)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": emu.url}}],
                "users": [{"name": "deployer", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "deployer", "namespace": NS}}],
                "current-context": "emu",
            }
        ),
        "utf-8",
    )
    return path


@pytest.fixture
def plane(ws: Path, tmp_path: Path) -> Iterator[LocalBackend]:
    """The data plane: real router and model servers on loopback, stopped afterwards."""
    backend = LocalBackend.for_workspace(tmp_path / "plane", f"sqlite:///{ws / 'mlflow.db'}")
    yield backend
    backend.down()


def _settings(kubeconfig: Path, prometheus_url: str) -> Settings:
    return Settings.model_validate({"MLOPS_KUBECONFIG": str(kubeconfig), "prometheus_url": prometheus_url})


def _sup(ws: Path, ring: KeyRing, user: str, clock: Clock, settings: Settings) -> Supervisor:
    return Supervisor(ws, user=user, key=ring.path(user), clock=clock, settings=settings)


def _approved(ws: Path, ring: KeyRing, request: str, clock: Clock, settings: Settings) -> RunResult:
    """``request`` asked by alice, held for approval, approved by carol: carol's result."""
    with _sup(ws, ring, "alice", clock, settings) as sup:
        held = sup.ask(request)
    assert held.status == "awaiting_approval", held.report.summary
    with _sup(ws, ring, "carol", clock, settings) as sup:
        done = sup.approve(held.thread_id, reason="evidence reviewed")
    assert done.status == "done", done.report.summary
    return done


def _output(result: RunResult, tool: str) -> dict[str, Any]:
    (output,) = [o.output for o in result.outputs if o.tool == tool and o.outcome == "ok"]
    assert isinstance(output, dict)
    return output


def _routes(emu: KubeEmulator) -> dict[int, int]:
    """The weights in the router's ConfigMap, as the router pods read them."""
    data = json.loads(emu.stored(CONFIGMAPS, NS)[f"{MODEL}-routes"]["data"]["routes.json"])
    return {int(v): r["weight"] for v, r in data["versions"].items()}


def _sync(plane: LocalBackend, emu: KubeEmulator, ws: Path, *, failing: frozenset[int] = frozenset()) -> str:
    """Run what the cluster says: each routed version's server (``failing`` ones answer 500), the ConfigMap's weights."""
    weights = _routes(emu)
    with using_store(f"sqlite:///{ws / 'mlflow.db'}") as client:
        for version in sorted(weights):
            if version not in plane.status(MODEL)["versions"]:
                source = client.get_model_version(MODEL, str(version)).source
                plane.deploy(MODEL, version, source, weight=50, fail_rate=1.0 if version in failing else 0.0)
    running = plane.status(MODEL)["versions"]
    plane.set_weights(MODEL, {v: weights.get(v, 0) for v in running})
    return str(plane.status(MODEL)["router"]["url"])


def _traffic(url: str, ws: Path, n: int) -> Counter[tuple[str, int]]:
    """``n`` single-row requests of held-out rows: (version, status) of each answer."""
    import pandas as pd

    test = pd.read_parquet(next(ws.glob("datasets/*/splits/*/test.parquet")))
    rows = json.loads(test[[c for c in test.columns if c not in ("class", "sex")]].head(50).to_json(orient="records"))
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(4) as pool:  # four at a time, as clients would

        def one(i: int) -> tuple[str, int]:
            answer = client.post(f"{url}/invocations", json={"dataframe_records": [rows[i % len(rows)]]})
            return answer.headers.get("x-model-version", "?"), answer.status_code

        return Counter(pool.map(one, range(n)))


def _scraped(prometheus: PrometheusServer, total: int) -> None:
    """Wait until Prometheus has scraped ``total`` requests of the model (all the traffic sent so far)."""
    prometheus.wait_for(
        f'sum(mlops_requests_total{{model="{MODEL}"}})', lambda r: bool(r) and float(r[0]["value"][1]) >= total
    )


def _deployments(emu: KubeEmulator) -> set[str]:
    return set(emu.stored(DEPLOYMENTS, NS))


def test_canary_promotion_and_a_failed_canary_rolled_back_on_kubernetes(
    ws: Path, ring: KeyRing, emu: KubeEmulator, kubeconfig: Path, plane: LocalBackend, prometheus: PrometheusServer
) -> None:
    """v1 first (approved); v2 a 10 % canary judged from Prometheus, promoted; v3 failing, rolled back to v2."""
    clock = Clock(datetime.now(UTC))
    settings = _settings(kubeconfig, prometheus.url)

    first = _output(_approved(ws, ring, f"deploy {MODEL} version 1", clock, settings), "deploy_model")
    assert (first["role"], first["weight"]) == ("first", 100)
    assert json.loads((ws / "serving" / MODEL / "backend.json").read_text("utf-8"))["target"] == "kubernetes"
    assert _routes(emu) == {1: 100} and _deployments(emu) == {MODEL, f"{MODEL}-v1"}
    applies = [r for r in emu.requests if r.method == "PATCH"]
    assert applies and all(r.params.get("fieldManager") == "mlops-supervisor" for r in applies)
    v1 = emu.stored(DEPLOYMENTS, NS)[f"{MODEL}-v1"]["metadata"]
    approved_digest = champion_tags(ws, 1)["mlops.approval.evidence_digest"]
    assert v1["annotations"][ANN_EVIDENCE] == approved_digest  # the digest the approval was bound to

    url = _sync(plane, emu, ws)
    scrape = prometheus.scrape(url.removeprefix("http://"), labels={"model": MODEL})
    try:
        with _sup(ws, ring, "alice", clock, settings) as sup:
            canary = sup.ask(f"deploy {MODEL} version 2")
            assert canary.status == "done", canary.report.summary
            assert (_output(canary, "deploy_model")["role"], _routes(emu)) == ("canary", {1: 90, 2: 10})
            v2 = emu.stored(DEPLOYMENTS, NS)[f"{MODEL}-v2"]["metadata"]
            assert v2["labels"]["mlops-supervisor/version"] == "2" and len(v2["annotations"][ANN_EVIDENCE]) == 64

            _sync(plane, emu, ws)
            sent = _traffic(url, ws, 300)
            assert sent[("2", 200)] >= 10 and sent[("1", 200)] + sent[("2", 200)] == 300
            _scraped(prometheus, 300)
            clock.tick(31)
            step = json.loads(sup.tools.get("advance_canary").tool.invoke({"model": MODEL}))
            assert (step["verdict"], step["canary"], step["weight"]) == ("pass", "passed", 10), step
            assert _routes(emu) == {1: 90, 2: 10}  # held at the last canary step until the promotion

        promoted = _output(
            _approved(ws, ring, f"promote {MODEL} version 2 to production", clock, settings), "promote_model"
        )
        assert promoted["previous"] == 1 and champion_of(ws, MODEL) == 2
        assert _routes(emu) == {1: 0, 2: 100}

        with _sup(ws, ring, "alice", clock, settings) as sup:
            bad = sup.ask(f"deploy {MODEL} version 3")
            assert bad.status == "done", bad.report.summary
            # version 1 stays routed at 0 since the promotion, for an instant rollback
            assert _routes(emu) == {1: 0, 2: 90, 3: 10} and f"{MODEL}-v3" in _deployments(emu)
            _sync(plane, emu, ws, failing=frozenset({3}))
            sent = _traffic(url, ws, 300)
            assert sent[("3", 500)] >= 5 and sent[("3", 200)] == 0
            _scraped(prometheus, 600)
            failed = json.loads(sup.tools.get("advance_canary").tool.invoke({"model": MODEL}))
        assert failed["verdict"] == "fail" and failed["rollback"]["to_version"] == 2, failed
        assert _routes(emu) == {2: 100}
        assert _deployments(emu) == {MODEL, f"{MODEL}-v2"}  # versions 1 and 3 are gone from the cluster
        assert set(emu.stored(SERVICES, NS)) == {MODEL, f"{MODEL}-v2"}
        assert champion_of(ws, MODEL) == 2
        assert champion_tags(ws, 3)["mlops.canary.passed"] == "false"
    finally:
        scrape.unlink()


def champion_tags(ws: Path, version: int) -> dict[str, str]:
    """The tags of ``version`` of the model."""
    with using_store(f"sqlite:///{ws / 'mlflow.db'}") as client:
        return dict(client.get_model_version(MODEL, str(version)).tags)


def test_a_canary_whose_metrics_cannot_be_read_is_not_judged_and_not_started(
    ws: Path, ring: KeyRing, emu: KubeEmulator, kubeconfig: Path, prometheus: PrometheusServer
) -> None:
    """Prometheus unreachable: advance raises and changes nothing; a canary deploy is refused before any apply."""
    clock = Clock(datetime.now(UTC))
    live = _settings(kubeconfig, prometheus.url)
    dead = _settings(kubeconfig, "http://127.0.0.1:9")  # the discard port: nothing listens
    _approved(ws, ring, f"deploy {MODEL} version 1", clock, live)
    with _sup(ws, ring, "alice", clock, live) as sup:
        assert sup.ask(f"deploy {MODEL} version 2").status == "done"
    record = (ws / "serving" / MODEL / "canary.json").read_text("utf-8")
    before = emu.snapshot()
    clock.tick(31)
    unreadable = r"Prometheus at http://127\.0\.0\.1:9 \(query .*did not answer"
    with _sup(ws, ring, "alice", clock, dead) as sup, pytest.raises(RunError, match=unreadable):
        sup.tools.get("advance_canary").tool.invoke({"model": MODEL})
    assert (ws / "serving" / MODEL / "canary.json").read_text("utf-8") == record
    assert emu.snapshot() == before and _routes(emu) == {1: 90, 2: 10}

    with _sup(ws, ring, "alice", clock, live) as sup:
        sup.tools.get("rollback_model").tool.invoke({"model": MODEL})
    assert _routes(emu) == {1: 100}
    before = emu.snapshot()
    with _sup(ws, ring, "alice", clock, dead) as sup:
        refused = sup.ask(f"deploy {MODEL} version 3")
    assert refused.status == "failed"
    assert any("Prometheus at http://127.0.0.1:9" in json.dumps(o.output) for o in refused.outputs), refused.outputs
    assert emu.snapshot() == before and f"{MODEL}-v3" not in _deployments(emu)
