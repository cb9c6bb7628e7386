"""The observability agent's tools (read-only): service metrics per version, drift, alerts, plots.

``service_metrics`` reads the router's Prometheus metrics: requests, error rate, latency
percentiles from the histogram and throughput since the router started. ``drift_report``
compares the router's redacted request sample with the training split of the version that
takes the most traffic (``_drift.drift_table``), adds prediction drift against the training
labels, and raises alerts from the policy's ``monitoring`` thresholds. Each alert carries a
runbook: how to verify, how to mitigate, and the exact rollback command. Both write a PNG
under ``<workspace>/reports/<model>/`` for people who would rather look than read.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.canary import quantile_from_buckets
from mlops_supervisor.tools.core import (
    GovernedTool,
    ModelArgs,
    ToolContext,
    context_egress,
    egress_client,
    to_json,
    using_store,
)
from mlops_supervisor.tools.monitoring._alerts import runbook
from mlops_supervisor.tools.monitoring._drift import drift_table, psi
from mlops_supervisor.tools.monitoring._plots import drift_plot, latency_plot
from mlops_supervisor.tools.monitoring._quality import quality_report as _quality_report
from mlops_supervisor.tools.serving import ServingBackends, read_window

__all__ = ["observability_tools"]


def _percentile(buckets: dict[str, float], q: float) -> float | None:
    """A quantile from Prometheus ``le`` buckets; None when it falls in the open-ended last bucket."""
    ordered = sorted(((float("inf") if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    value = quantile_from_buckets(ordered, q)
    return None if value is None or value == float("inf") else value


class _Observer:
    def __init__(self, ctx: ToolContext) -> None:
        self.ctx = ctx
        self.uri = ctx.store_uri
        self.backend = ServingBackends(ctx)
        self.egress = context_egress(ctx)

    def _reports(self, model: str) -> Path:
        return Path(self.ctx.workspace) / "reports" / model

    def _router(self, model: str) -> dict[str, Any]:
        router = self.backend.status(model)["router"]
        if not router or not router["alive"]:
            raise InvalidInputError("not_serving", f"{model} has no running router in this workspace; deploy it first")
        return dict(router)

    def metrics(self, model: str) -> dict[str, Any]:
        created: dict[str, float] = {}
        if self.backend.target(model) != "local":
            # a cluster's routers are read through Prometheus (MLOPS_PROMETHEUS_URL), summed over their pods
            window = self.backend.read_metrics(model)
        else:
            router = self._router(model)
            with egress_client(self.egress) as client:  # the router's URL comes from a state file: held to the list
                text = client.get(f"{router['url']}/metrics").text
            window = read_window(text)
            created = {
                line.split('version="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("mlops_requests_created")
            }
        limits = self.ctx.policy.monitoring
        versions, alerts = {}, []
        for version, w in sorted(window.items()):
            requests = w["requests"]
            p99 = _percentile(w["buckets"], 0.99)
            error_rate = round(w["errors"] / requests, 6) if requests else 0.0
            stats = {
                "requests": int(requests),
                "error_rate": error_rate,
                "p50_ms": None if (p := _percentile(w["buckets"], 0.5)) is None else p * 1000,
                "p95_ms": None if (p := _percentile(w["buckets"], 0.95)) is None else p * 1000,
                "p99_ms": None if p99 is None else p99 * 1000,
                # unknown where the series' start is unknown (a cluster's, read through Prometheus)
                "throughput_rps": round(requests / max(time.time() - created[version], 1e-9), 3)
                if version in created
                else None,
            }
            versions[version] = stats
            if requests and error_rate > limits.max_error_rate:
                alerts.append(
                    {
                        "kind": "error_rate",
                        "version": version,
                        "message": f"version {version} errors on {error_rate:.2%} of requests "
                        f"(limit {limits.max_error_rate:.2%})",
                        "runbook": runbook(model, "error rate"),
                    }
                )
            if stats["p99_ms"] is not None and stats["p99_ms"] > limits.max_p99_latency_ms:
                alerts.append(
                    {
                        "kind": "latency",
                        "version": version,
                        "message": f"version {version} p99 {stats['p99_ms']:.0f} ms (limit "
                        f"{limits.max_p99_latency_ms:g} ms)",
                        "runbook": runbook(model, "latency"),
                    }
                )
        plot = latency_plot(self._reports(model), model, window)
        return {
            "model": model,
            "versions": versions,
            "alerts": alerts,
            "plot": str(plot) if plot else None,
            "note": "percentiles are the upper bounds of the histogram buckets they fall in",
        }

    def drift(self, model: str) -> dict[str, Any]:
        status = self.backend.status(model)
        serving = [(s["weight"], v) for v, s in status["versions"].items() if s["alive"]]
        if not serving:
            raise InvalidInputError("not_serving", f"{model} serves no version in this workspace; deploy it first")
        version = max(serving, key=lambda wv: (wv[0], int(wv[1])))[1]  # a tie goes to the higher version
        with using_store(self.uri) as client:
            tags = client.get_model_version(model, str(version)).tags
        split = (
            Path(self.ctx.workspace)
            / "datasets"
            / tags["mlops.data.digest"]
            / "splits"
            / tags["mlops.split.key"]
            / "train.parquet"
        )
        reference = pd.read_parquet(split)
        samples = Path(self.ctx.workspace) / "serving" / model / "samples.jsonl"
        rows: list[dict[str, Any]] = []
        predictions: list[Any] = []
        if samples.exists():
            for line in samples.read_text("utf-8").splitlines()[-5000:]:
                item = json.loads(line)
                rows += item["records"]
                predictions += item.get("predictions") or []
        current = pd.DataFrame(rows)
        limits = self.ctx.policy.monitoring
        table = drift_table(
            reference.drop(columns=[tags.get("mlops.target", "")], errors="ignore"),
            current,
            psi_threshold=limits.psi_threshold,
            p_value=limits.p_value,
            min_samples=limits.min_samples,
        )
        prediction = None
        classes = json.loads(tags.get("mlops.target.classes", "null") or "null")
        if classes and len(predictions) >= limits.min_samples:
            target = reference[tags["mlops.target"]].astype(str).map({str(c): i for i, c in enumerate(classes)})
            ref_share = np.bincount(target.dropna().astype(int), minlength=len(classes)) / max(target.notna().sum(), 1)
            live_share = np.bincount(np.asarray(predictions, dtype=int), minlength=len(classes)) / len(predictions)
            prediction = {
                "psi": psi(ref_share, live_share),
                "reference_shares": ref_share.round(4).tolist(),
                "live_shares": live_share.round(4).tolist(),
            }
        drifted = [c for c, r in table.items() if r["drifted"]]
        alerts = [
            {
                "kind": "data_drift",
                "feature": c,
                "message": f"{c} drifted: PSI {table[c]['psi']:.3f} (limit {limits.psi_threshold}), "
                f"{table[c]['test']} p={table[c]['p_value']:.2g}",
                "runbook": runbook(model, f"drift of {c}"),
            }
            for c in drifted
        ]
        if prediction and prediction["psi"] > limits.psi_threshold:
            alerts.append(
                {
                    "kind": "prediction_drift",
                    "message": f"prediction shares moved: PSI {prediction['psi']:.3f}",
                    "runbook": runbook(model, "prediction drift"),
                }
            )
        plot = drift_plot(self._reports(model), model, table, limits.psi_threshold, limits.p_value)
        return {
            "model": model,
            "version": version,
            "live_rows": len(current),
            "reference_rows": len(reference),
            "drifted": drifted,
            "features": table,
            "prediction": prediction,
            "alerts": alerts,
            "plot": str(plot) if plot else None,
        }


def observability_tools(ctx: ToolContext) -> list[GovernedTool]:
    """service_metrics, drift_report, quality_report and monitor_model (read-only for the lifecycle)."""
    from mlops_supervisor.tools.monitoring._monitor import monitor_model  # it builds on _Observer

    observer = _Observer(ctx)

    def service_metrics(model: str) -> str:
        return to_json(observer.metrics(model))

    def drift_report(model: str) -> str:
        return to_json(observer.drift(model))

    def quality_report(model: str) -> str:
        return to_json(_quality_report(ctx, model))

    def monitor(model: str) -> str:
        return to_json(monitor_model(ctx, model, observer=observer))

    return [
        GovernedTool.from_function(
            "service_metrics",
            "Requests, error rate, latency percentiles and throughput per version, with alerts.",
            ModelArgs,
            service_metrics,
            mutates=False,
        ),
        GovernedTool.from_function(
            "drift_report",
            "Per-feature drift (PSI with KS or chi-square) of live requests against the training "
            "data, prediction drift, and alerts with runbooks.",
            ModelArgs,
            drift_report,
            mutates=False,
        ),
        GovernedTool.from_function(
            "quality_report",
            "Live quality and bias per version over labelled predictions (feedback): the evaluation's "
            "metrics against the version's own evaluation, fairness differences per sensitive feature, "
            "alerts with runbooks.",
            ModelArgs,
            quality_report,
            mutates=False,
        ),
        GovernedTool.from_function(
            "monitor_model",
            "Run every check the model's spec watches (errors, latency, drift, live quality, bias), route the "
            "alerts to its on-call owner (deduplicated, retried, audited) and propose remedies; changes nothing "
            "in the lifecycle.",
            ModelArgs,
            monitor,
            mutates=False,
        ),
    ]
