"""Serving throughput and latency: our model server, the router in front of it, and `mlflow models serve`.

One scikit-learn model (LogisticRegression on the bundled breast-cancer data, 30 numeric
features, the model FACTS.md measured) is logged and registered in a throw-away MLflow store.
Then, on loopback:

- **direct**: our model server (``tools/serving/_model_server.py``: Starlette, signature validation on
  every request) started by ``LocalBackend.deploy``, the path ``deploy_model`` takes;
- **router**: the same server behind its router (weighted split, Prometheus metrics,
  redacted request sampling at the default 10 %);
- **mlflow**: ``mlflow models serve --env-manager local`` on the same registered version.

Load comes from ``wrk`` (``apt-get install wrk``): one row per request, ``--duration``
seconds per measurement after a warm-up, rounds interleaved over the targets, medians
reported. Each target is loaded by ``--saturate`` connections (64: enough to keep the model
server busy, so what is measured is capacity), by ``--connections`` (8) and by a single
caller (latency without queueing); ``mlflow models serve`` only by the last two.

Why capacity at 64 connections: wrk is a closed loop, so with 8 connections the router's
extra hop means fewer requests wait at the model server at any moment, its micro-batches are
smaller and each request costs it more; the 8-connection throughput then measures that
batching effect as much as the router. Both numbers are reported. On two or more cores each model server (ours and
MLflow's) has core 1 to itself while wrk and the router share core 0, so the server's CPU is
the same with or without the router in front. A malformed request is sent to each server too, to show
what it answers.

    python benchmarks/bench_serving.py --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _rows import write_rows  # noqa: E402

ROUTER_ROW = "| serving: router vs direct"
# With two or more cores, every model server runs on core 1 alone and the load generator and
# the router share core 0: the server gets the same CPU whether or not a router is in front,
# and the router's cost shows as what it adds, not as a fight for the server's core.
PINNED = (os.cpu_count() or 1) >= 2
LOAD_CPU = ["taskset", "-c", "0"] if PINNED else []
SERVER_CPU = ["taskset", "-c", "1"] if PINNED else []


def pin(pid: int, cpu: str) -> None:
    """Move every thread of ``pid`` to ``cpu`` (no-op on one core)."""
    if PINNED:
        subprocess.run(["taskset", "-a", "-p", "-c", cpu, str(pid)], check=True, capture_output=True)


MLFLOW_ROW = "| serving: our model server vs `mlflow models serve`"


def register_model(store: Path) -> tuple[str, str, dict[str, float]]:
    """Train, log and register the model; its tracking URI, ``models:/`` URI and one feature row."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlops_supervisor.tools.training._runs import trusted_types

    warnings.filterwarnings("ignore")
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # artifacts in the throw-away directory too, not in ./mlruns of wherever this runs
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment("bench-serving", artifact_location=(store / "artifacts").as_uri())
    )
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X.columns = [c.replace(" ", "_") for c in X.columns]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            registered_model_name="bench-model",
            # the format the project's models are logged in, which its model server loads (and MLflow's too)
            serialization_format="skops",
            skops_trusted_types=trusted_types(model),
        )
    row = {k: float(v) for k, v in X.iloc[0].items()}
    return uri, f"models:/bench-model/{info.registered_model_version}", row


def wait_ready(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {seconds:g} s")


def wrk(url: str, body_file: Path, *, connections: int, duration: int) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) and the error count of one wrk run posting ``body_file``."""
    script = body_file.with_suffix(".lua")
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"local f = io.open({json.dumps(str(body_file))}, 'r')\nwrk.body = f:read('*a')\nf:close()\n",
        "utf-8",
    )
    load = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    done = subprocess.run(
        [*LOAD_CPU, *load, f"{url}/invocations"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"^\s+{label}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise SystemExit(f"{url}: failed requests during the load run:\n{out}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": ms("50"),
        "p99": ms("99"),
    }


def bad_request(url: str) -> str:
    answer = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"mean_radius": "big"}]}, timeout=10)
    return f"{answer.status_code}: {answer.text[:160]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement")
    parser.add_argument("--connections", type=int, default=8, help="concurrent wrk connections")
    parser.add_argument(
        "--saturate", type=int, default=64, help="connections that saturate the model server (capacity)"
    )
    parser.add_argument("--write", action="store_true", help="update the rows in BENCHMARKS.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    from mlops_supervisor.tools.serving import LocalBackend

    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    backend = LocalBackend.for_workspace(tmp / "ws")
    mlflow_server: subprocess.Popen[bytes] | None = None
    try:
        tracking_uri, model_uri, row = register_model(tmp)
        backend.tracking_uri = tracking_uri
        status = backend.deploy("bench-model", 1, model_uri, weight=100)
        pin(status["versions"][1]["pid"], "1")
        pin(status["router"]["pid"], "0")
        port = 18000 + os.getpid() % 1000
        bin_dir = Path(sys.executable).parent
        serve = ["models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1"]
        mlflow_server = subprocess.Popen(
            [*SERVER_CPU, str(bin_dir / "mlflow"), *serve, "--port", str(port)],
            # it execs `uvicorn` from PATH
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        targets = {
            "direct": f"http://127.0.0.1:{status['versions'][1]['port']}",
            "router": status["router"]["url"],
            "mlflow": f"http://127.0.0.1:{port}",
        }
        wait_ready(f"{targets['mlflow']}/ping")
        body = tmp / "body.json"
        body.write_text(json.dumps({"dataframe_records": [row]}), "utf-8")
        for name, url in targets.items():
            print(f"{name}: a malformed request gets {bad_request(url)}", file=sys.stderr)
            wrk(url, body, connections=args.connections, duration=2)  # warm-up
        # Each target at three loads: enough callers to saturate the model server (capacity), the
        # usual --connections, and a single caller (what one client waits, no queueing). MLflow's
        # server is left out of the saturating load: at 50 requests/s, 64 callers wait past
        # wrk's timeouts.
        loads = {"direct": (args.saturate, args.connections, 1), "router": (args.saturate, args.connections, 1)}
        loads["mlflow"] = (args.connections, 1)
        runs: dict[tuple[str, int], list[dict[str, float]]] = {
            (name, c): [] for name, levels in loads.items() for c in levels
        }
        for i in range(args.rounds):
            for (name, c), results in runs.items():
                results.append(wrk(targets[name], body, connections=c, duration=args.duration))
            print(
                f"round {i + 1}: "
                + "; ".join(
                    f"{n}/{c} conn {r[-1]['rps']:.0f} req/s p50 {r[-1]['p50']:.2f} ms p99 {r[-1]['p99']:.2f} ms"
                    for (n, c), r in runs.items()
                ),
                file=sys.stderr,
            )
    finally:
        if mlflow_server is not None:
            os.killpg(mlflow_server.pid, signal.SIGTERM)
            mlflow_server.wait(timeout=30)
        backend.down()
        shutil.rmtree(tmp, ignore_errors=True)

    med: dict[tuple[str, int], dict[str, Any]] = {
        key: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")} for key, rs in runs.items()
    }
    d, r, m = (med[(n, args.connections)] for n in ("direct", "router", "mlflow"))
    d1, r1, m1 = (med[(n, 1)] for n in ("direct", "router", "mlflow"))
    ds, rs = (med[(n, args.saturate)] for n in ("direct", "router"))

    def cell(label: str, loaded: dict[str, Any], alone: dict[str, Any]) -> str:
        return (
            f"{label} {loaded['rps']:,.0f} req/s, p50 {loaded['p50']:.2f} ms, p99 {loaded['p99']:.2f} ms; "
            f"one caller p50 {alone['p50']:.2f} ms, p99 {alone['p99']:.2f} ms"
        )

    def saturated(x: dict[str, Any]) -> str:
        return f"{args.saturate} connections {x['rps']:,.0f} req/s (p99 {x['p99']:.1f} ms)"

    load = f"one row per request, wrk, {args.duration} s x {args.rounds} rounds"
    command = f"`python benchmarks/bench_serving.py --rounds {args.rounds}`"
    rows = [
        f"{ROUTER_ROW} ({load}) | direct: {saturated(ds)}; {args.connections} connections "
        f"{cell('', d, d1).strip()} | router: {saturated(rs)}; {args.connections} connections "
        f"{cell('', r, r1).strip()} | capacity **{rs['rps'] / ds['rps']:.0%}** of direct "
        f"({args.connections} connections: {r['rps'] / d['rps']:.0%}); p99 added **{r1['p99'] - d1['p99']:+.2f} ms** "
        f"for one caller, **{r['p99'] - d['p99']:+.2f} ms** at {args.connections} connections "
        f"(target ≥ 90 %, ≤ +2 ms) | {command} |",
        f"{MLFLOW_ROW} ({load}, {args.connections} connections) | {cell('mlflow', m, m1)} | {cell('ours', d, d1)} "
        f"| **{d['rps'] / m['rps']:.1f}x** throughput, p99 {d['p99']:.2f} ms (target ≥ 10x, p99 < 10 ms) "
        f"| {command} |",
    ]
    print("\n".join(rows))
    if args.write:
        write_rows(ROOT / "BENCHMARKS.md", {ROUTER_ROW: rows[0], MLFLOW_ROW: rows[1]})


if __name__ == "__main__":
    main()
