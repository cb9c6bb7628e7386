"""Local serving: one model server per version and one traffic router per model, as ASGI apps.

The model server loads a registered version once and answers ``POST /invocations`` after
checking every record against the model's signature: a missing, unknown or mistyped column
gets a 400 that names it. It is a small Starlette app over the scikit-learn model that
batches concurrent requests into one ``predict``, rather than ``mlflow models serve``: about
50x the throughput of that on the same model (BENCHMARKS.md).

The router splits traffic between versions by weight, forwards each request to the chosen
version's server, and keeps per-version Prometheus metrics (requests by status, latency
histogram) at ``/metrics`` plus a redacted random sample (``sample_rate`` of requests, 10 %
by default) of requests and predictions for drift checks. Its routes live in a JSON file it
re-reads when the file changes, so a weight change is a file write, not a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mlops_supervisor.policies import Redactor

__all__ = ["build_model_app", "build_router_app", "validate_records"]

_NUMERIC = {"double", "float", "long", "integer"}


def validate_records(payload: Any, columns: Mapping[str, str]) -> list[dict[str, Any]] | str:
    """The records of an invocation body, or a message saying what is wrong with it.

    Accepts ``{"dataframe_records": [...]}``, ``{"dataframe_split": {"columns", "data"}}`` or
    ``{"instances": [...]}`` (the MLflow scoring formats). Every record must name exactly the
    signature's columns; numbers must be numbers (or null), strings strings (or null).
    """
    if not isinstance(payload, dict):
        return "the body must be a JSON object with dataframe_records, dataframe_split or instances"
    records: Any
    if "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("columns"), list)
            or not isinstance(split.get("data"), list)
        ):
            return "dataframe_split needs 'columns' (a list) and 'data' (a list of rows)"
        records = [dict(zip(split["columns"], row, strict=False)) for row in split["data"] if isinstance(row, list)]
    else:
        records = payload.get("dataframe_records", payload.get("instances"))
    if not isinstance(records, list) or not records:
        return "send a non-empty list of records under dataframe_records (or instances)"
    expected = set(columns)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return f"record {i} is not an object of column: value"
        missing, unknown = sorted(expected - set(record)), sorted(set(record) - expected)
        if missing:
            return f"record {i} lacks column(s) {', '.join(missing)}; the model expects: {', '.join(columns)}"
        if unknown:
            return f"record {i} has unknown column(s) {', '.join(unknown)}; the model expects: {', '.join(columns)}"
        for name, kind in columns.items():
            value = record[name]
            if value is None:
                continue
            if kind in _NUMERIC and (isinstance(value, bool) or not isinstance(value, int | float)):
                return f"record {i}: column {name!r} must be a number ({kind}), got {type(value).__name__} {value!r}"
            if kind == "string" and not isinstance(value, str):
                return f"record {i}: column {name!r} must be a string, got {type(value).__name__} {value!r}"
    return records


def _frame(records: list[dict[str, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """Validated records as the frame the model was trained on, in the signature's column order.

    Numbers go in as one float64 block and strings as pandas' own string columns, as at
    training time. ``from_records`` and then an ``astype`` of the numeric columns cost about
    9 ms for one 30-column row here; one block costs 0.2 ms, and a one-block frame also
    makes scikit-learn's input checks in ``predict`` a third cheaper.
    """
    numeric = [name for name, kind in columns.items() if kind in _NUMERIC]
    block = np.array([[np.nan if r[c] is None else r[c] for c in numeric] for r in records], dtype=np.float64)
    frame = pd.DataFrame(block.reshape(len(records), len(numeric)), columns=numeric, copy=False)
    others = [name for name in columns if name not in set(numeric)]
    if not others:
        return frame
    rest = pd.DataFrame({name: [r[name] for r in records] for name in others})
    return pd.concat([frame, rest], axis=1)[list(columns)]


class _Batcher:
    """Greedy micro-batching: requests that arrive while a prediction runs share the next one.

    A scikit-learn pipeline spends about 3 ms per ``predict`` call on input checks whether it
    gets one row or fifty, so under concurrent load one call per request caps a server at a
    few hundred requests/s. The worker takes everything queued, predicts once and hands each
    request its slice; with one request in flight it predicts at once, so an idle server adds
    no wait. If a batch fails, each request is retried alone, so one bad request cannot fail
    its neighbours.
    """

    def __init__(self, predict: Callable[[Any], Any], columns: Mapping[str, str], *, as_array: bool = False) -> None:
        self.predict = predict
        self.columns = columns
        self.as_array = as_array
        self.pending: list[tuple[list[dict[str, Any]], asyncio.Future[list[Any]]]] = []
        self.wake = asyncio.Event()

    async def submit(self, records: list[dict[str, Any]]) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.pending.append((records, future))
        self.wake.set()
        return await future

    def _run(self, records: list[dict[str, Any]]) -> list[Any]:
        if self.as_array:
            rows = [[np.nan if r[c] is None else r[c] for c in self.columns] for r in records]
            features: Any = np.array(rows, dtype=np.float64).reshape(len(records), len(self.columns))
        else:
            features = _frame(records, self.columns)
        return list(np.asarray(self.predict(features)).tolist())

    async def work(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(0)  # one loop turn: read the requests already on the wire
            batch, self.pending = self.pending, []
            if not batch:
                continue
            try:
                predictions = self._run([r for records, _ in batch for r in records])
            except Exception:  # noqa: BLE001 - retried one by one below, where the error is reported
                for records, future in batch:
                    if future.done():  # its client went away
                        continue
                    try:
                        future.set_result(self._run(records))
                    except Exception as exc:  # noqa: BLE001 - the request gets a 500 that says why
                        future.set_exception(exc)
                continue
            at = 0
            for records, future in batch:
                if not future.done():
                    future.set_result(predictions[at : at + len(records)])
                at += len(records)


def _numeric_in_signature_order(model: Any, columns: Mapping[str, str]) -> bool:
    """Whether the model can take a plain float array in the signature's column order.

    True when every column is a number and the model was fitted on exactly those columns in
    that order (or on an unnamed array). Then the names are already checked, by
    ``validate_records`` against the signature, and scikit-learn's own check of a DataFrame's
    names and dtypes, which costs more than the prediction itself for a linear model (about
    1.5 of 1.8 ms per call here), buys nothing. Pipelines that pick columns by name, like the
    Adult ones, keep the DataFrame.
    """
    fitted = getattr(model, "feature_names_in_", None)
    if not all(kind in _NUMERIC for kind in columns.values()):
        return False
    if fitted is not None and list(fitted) != list(columns):
        return False
    # A step that selects columns by name (a ColumnTransformer) needs the DataFrame even
    # then: try both on a probe row and take the array only if it answers the same.
    probe = [dict.fromkeys(columns, 0.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            same = np.array_equal(
                np.asarray(model.predict(np.zeros((1, len(columns))))),
                np.asarray(model.predict(_frame(probe, columns))),
            )
        except Exception:  # noqa: BLE001 - any failure means: keep the DataFrame
            return False
    if same and fitted is not None:
        # the names were checked against the signature; scikit-learn would warn on every call
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    return same


def build_model_app(model_uri: str, *, tracking_uri: str, version: str, fail_rate: float = 0.0) -> Starlette:
    """The server of one model version. ``fail_rate`` > 0 makes it answer 500 that often (fault drills)."""
    import mlflow.sklearn
    from mlflow.models import get_model_info

    from mlops_supervisor.tools._mlflow import using_store

    with using_store(tracking_uri):
        model = mlflow.sklearn.load_model(model_uri)
        signature = get_model_info(model_uri).signature
    columns = {c.name: c.type.name for c in signature.inputs.inputs}
    batcher = _Batcher(model.predict, columns, as_array=_numeric_in_signature_order(model, columns))
    chaos = random.Random(0)

    async def invocations(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        records = validate_records(payload, columns)
        if isinstance(records, str):
            return JSONResponse({"error": records}, status_code=400)
        if fail_rate and chaos.random() < fail_rate:
            return JSONResponse({"error": "injected fault"}, status_code=500)
        try:
            predictions = await batcher.submit(records)
        except Exception as exc:  # noqa: BLE001 - the caller gets a 500 that says why, the server stays up
            return JSONResponse({"error": f"prediction failed: {type(exc).__name__}: {exc}"}, status_code=500)
        return JSONResponse({"predictions": predictions, "version": version})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "version": version, "model_uri": model_uri, "pid": os.getpid()})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(batcher.work())
        yield
        worker.cancel()

    return Starlette(
        routes=[Route("/invocations", invocations, methods=["POST"]), Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
    )


class _Routes:
    """The routes file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mtime = -1.0
        self.versions: dict[str, dict[str, Any]] = {}
        self.sample_rate = 0.1

    def current(self) -> dict[str, dict[str, Any]]:
        mtime = os.stat(self.path).st_mtime
        if mtime != self.mtime:
            routes = json.loads(self.path.read_text("utf-8"))
            self.versions = routes["versions"]
            self.sample_rate = float(routes.get("sample_rate", 0.1))
            self.mtime = mtime
        return self.versions


def build_router_app(routes_path: Path, *, samples_path: Path, redactor: Redactor) -> Starlette:
    """The traffic router of one model: weighted split, per-version metrics, redacted samples."""
    import aiohttp
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    routes = _Routes(routes_path)
    registry = CollectorRegistry()
    requests_total = Counter(
        "mlops_requests", "Requests by model version and HTTP status", ["version", "status"], registry=registry
    )
    latency = Histogram(
        "mlops_request_latency_seconds",
        "Latency through the router, by model version",
        ["version"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )
    # aiohttp rather than httpx for the hop to the model server: with httpx's async client
    # the router reached a fifth of the server's direct throughput (167 against 849
    # requests/s, BENCHMARKS.md). The session is made in the lifespan, on the server's loop.
    sessions: list[aiohttp.ClientSession] = []
    timeout = aiohttp.ClientTimeout(total=10.0)
    picker = random.Random()

    async def invocations(request: Request) -> Response:
        versions = {v: r for v, r in routes.current().items() if r.get("weight", 0) > 0}
        if not versions:
            return JSONResponse({"error": "no version takes traffic"}, status_code=503)
        version = picker.choices(list(versions), weights=[r["weight"] for r in versions.values()])[0]
        body = await request.body()
        started = time.perf_counter()
        try:
            async with sessions[0].post(
                f"{versions[version]['url']}/invocations", data=body, headers={"content-type": "application/json"}
            ) as upstream:
                status, content = upstream.status, await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            status, content = 502, json.dumps({"error": f"version {version} unreachable: {reason}"}).encode()
        latency.labels(version).observe(time.perf_counter() - started)
        requests_total.labels(version, str(status)).inc()
        if status == 200 and picker.random() < routes.sample_rate:
            _sample(samples_path, redactor, version, body, content)
        return Response(
            content, status_code=status, media_type="application/json", headers={"x-model-version": version}
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=None)
        sessions.append(aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False))
        yield
        await sessions.pop().close()

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok", "versions": routes.current(), "pid": os.getpid()})

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def _sample(path: Path, redactor: Redactor, version: str, body: bytes, content: bytes) -> None:
    """Append one redacted request and its predictions; the file stops growing at about 50 MB."""
    if path.exists() and path.stat().st_size > 50 * 1024 * 1024:
        return
    try:
        records = json.loads(body).get("dataframe_records")
        predictions = json.loads(content).get("predictions")
    except (ValueError, AttributeError):
        return
    if not isinstance(records, list):
        return
    line = {"ts": time.time(), "version": version, "records": records, "predictions": predictions}
    redacted = redactor.redact_text(json.dumps(line, default=str))
    with path.open("a", encoding="utf-8") as fh:
        fh.write(redacted + "\n")
