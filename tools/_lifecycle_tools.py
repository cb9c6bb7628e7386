"""The data agent's and the experimentation agent's tools, bound to a workspace.

What the data stage produces lives in the workspace, content-addressed::

    datasets/<digest>/data.parquet           the versioned data set (PII already dropped or hashed)
    datasets/<digest>/dataset.json           its facts: source, columns, validation and PII reports
    datasets/<digest>/splits/<key>/          train, validation and test parquet + reference_profile.json
    pipelines/<spec name>.json               which data set and split the spec's last data stage made

Each directory appears whole or not at all (written aside, then renamed), and the
pointer under ``pipelines/`` is what training reads, so training never sees a half-made
data set and always trains on what the data stage checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from mlops_supervisor.policies import InvalidInputError, Redactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.tools import _data as data
from mlops_supervisor.tools._mlflow import default_tracking_uri, ensure_experiment, using_store
from mlops_supervisor.tools._registry import GovernedTool, ToolContext
from mlops_supervisor.tools._spec import LoadedSpec, load_spec
from mlops_supervisor.tools._training import TrainingContext, plan_search, train_candidates

__all__ = ["data_tools", "experimentation_tools"]


class _SourceArgs(BaseModel):
    source: str = Field(description="a CSV or Parquet path, or sklearn:NAME")


class _SpecArgs(BaseModel):
    spec: str = Field(description="path of the pipeline spec (YAML)")


class _ExperimentArgs(BaseModel):
    experiment: str = Field(description="MLflow experiment name (the spec's name by default)")
    limit: int = Field(default=20, ge=1, le=200, description="most recent runs to list")


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


# --- workspace layout ----------------------------------------------------------------------


def _datasets(ctx: ToolContext) -> Path:
    return Path(ctx.workspace) / "datasets"


def _pointer_path(ctx: ToolContext, loaded: LoadedSpec) -> Path:
    return Path(ctx.workspace) / "pipelines" / f"{loaded.spec.name}.json"


def _data_key(loaded: LoadedSpec, rules: PiiRules) -> str:
    """What the data stage's output depends on, besides the file: the data section, seed and PII rules."""
    material = {
        "data": loaded.spec.data.model_dump(mode="json"),
        "seed": loaded.spec.seed,
        "pii": rules.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _write_json_atomic(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(value, indent=2, default=str), "utf-8")
    os.replace(tmp, path)


def _publish_dir(staging: Path, final: Path) -> None:
    """Move a fully written directory into place; content-addressed, so an existing one is equal."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _read_pointer(ctx: ToolContext, loaded: LoadedSpec, need: str) -> dict[str, Any]:
    path = _pointer_path(ctx, loaded)
    hint = f"run the data stage first: mlops-supervisor run {loaded.path} --stop-after data"
    if not path.exists():
        raise InvalidInputError("data_not_prepared", f"no data set has been versioned for {loaded.spec.name}; {hint}")
    pointer: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if pointer.get("data_key") != _data_key(loaded, ctx.policy.pii):
        raise InvalidInputError(
            "data_not_prepared",
            f"the data section of {loaded.path} or the PII policy changed since the data was versioned; {hint}",
        )
    if need not in pointer:
        raise InvalidInputError("data_not_prepared", f"the data of {loaded.spec.name} has no {need} yet; {hint}")
    return pointer


# --- shared steps --------------------------------------------------------------------------


def _load(ctx: ToolContext, loaded: LoadedSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    frame, facts = data.load_table(loaded.resolve_source(), max_mb=ctx.max_dataset_mb)
    missing = [c for c in loaded.spec.data.drop_columns if c not in frame.columns]
    if missing:
        raise InvalidInputError("drop_column_missing", f"data.drop_columns names columns not in the data: {missing}")
    facts["source"] = ctx.redactor.redact_text(str(facts["source"]))
    return frame.drop(columns=list(loaded.spec.data.drop_columns)), facts


def _validate(frame: pd.DataFrame, loaded: LoadedSpec) -> list[dict[str, Any]]:
    checks = data.validate_frame(frame, loaded.spec.data, task=loaded.spec.training.task)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise InvalidInputError(
            failed[0].reason_code,
            "data validation failed: " + "; ".join(f"{c.reason_code}: {c.detail}" for c in failed),
        )
    return [c.as_record() for c in checks]


_SCANS: dict[tuple[str, str, int, tuple[str, ...]], list[dict[str, Any]]] = {}


def _scan(ctx: ToolContext, frame: pd.DataFrame, loaded: LoadedSpec) -> list[dict[str, Any]]:
    """The PII report of ``frame``; kept in memory by content digest so version reuses scan's work."""
    rules = ctx.policy.pii
    protected = (loaded.spec.data.target, *loaded.spec.data.sensitive_features)
    key = (data.dataset_digest(frame), rules.model_dump_json(), loaded.spec.seed, protected)
    if key not in _SCANS:
        detector: Redactor = ctx.pii_detector(rules)
        while len(_SCANS) >= 8:
            _SCANS.pop(next(iter(_SCANS)))
        _SCANS[key] = data.scan_frame_for_pii(frame, detector, rules, seed=loaded.spec.seed, protected=protected)
    report = _SCANS[key]
    refused = [e for e in report if e["action"] == "refuse"]
    if refused:
        raise InvalidInputError(
            "pii_in_protected_column",
            "PII found in the target or a sensitive feature, which cannot be dropped or hashed: "
            + "; ".join(f"{e['column']!r}: {e['why']}" for e in refused),
        )
    return report


# --- data tools ----------------------------------------------------------------------------


def data_tools(ctx: ToolContext) -> list[GovernedTool]:
    """load_dataset, validate_dataset, scan_pii, version_dataset and split_dataset."""

    def load_dataset(source: str) -> str:
        frame, facts = data.load_table(source, max_mb=ctx.max_dataset_mb)
        facts["source"] = ctx.redactor.redact_text(source)
        facts["missing"] = {c: round(float(v), 4) for c, v in frame.isna().mean().items() if v}
        facts["distinct"] = {c: int(frame[c].nunique()) for c in frame.columns}
        return _json(facts)

    def validate_dataset(spec: str) -> str:
        loaded = load_spec(spec)
        frame, facts = _load(ctx, loaded)
        checks = _validate(frame, loaded)
        return _json(
            {
                "ok": True,
                "rows": facts["rows"],
                "checks": [c for c in checks if c["status"] != "pass"] or "every check passed",
                "passed": sum(c["status"] == "pass" for c in checks),
            }
        )

    def scan_pii(spec: str) -> str:
        loaded = load_spec(spec)
        frame, _ = _load(ctx, loaded)
        report = _scan(ctx, frame, loaded)
        flagged = [e for e in report if e["action"] != "keep"]
        return _json(
            {
                "columns_scanned": len(report),
                "pii_columns": flagged,
                "action": ctx.policy.pii.action,
                "summary": (
                    f"{len(flagged)} of {len(report)} columns hold PII and will be {ctx.policy.pii.action}"
                    f"{'ped' if ctx.policy.pii.action == 'drop' else 'ed'} before anything trains or is logged"
                    if flagged
                    else f"no PII found in {len(report)} columns"
                ),
            }
        )

    def version_dataset(spec: str) -> str:
        loaded = load_spec(spec)
        frame, facts = _load(ctx, loaded)
        checks = _validate(frame, loaded)
        report = _scan(ctx, frame, loaded)
        key = data.pii_hash_key(ctx.workspace, ctx.pii_hash_key) if any(e["action"] == "hash" for e in report) else b""
        clean = data.apply_pii_actions(frame, report, hash_key=key)
        digest = data.dataset_digest(clean)
        final = _datasets(ctx) / digest
        if not (final / "dataset.json").exists():
            staging = _datasets(ctx) / f".staging-{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            clean.to_parquet(staging / "data.parquet", index=False)
            (staging / "dataset.json").write_text(
                json.dumps(
                    {
                        "digest": digest,
                        "source": facts["source"],
                        "format": facts["format"],
                        "rows": len(clean),
                        "columns": {c: str(t) for c, t in clean.dtypes.items()},
                        "target": loaded.spec.data.target,
                        "validation": checks,
                        "pii": report,
                        "created_at": datetime.now(UTC).isoformat(),
                    },
                    indent=2,
                    default=str,
                ),
                "utf-8",
            )
            _publish_dir(staging, final)
        _write_json_atomic(
            _pointer_path(ctx, loaded),
            {
                "spec": str(loaded.path),
                "data_key": _data_key(loaded, ctx.policy.pii),
                "dataset_digest": digest,
                "updated_at": datetime.now(UTC).isoformat(),
            },
        )
        changed = {e["column"]: e["action"] for e in report if e["action"] != "keep"}
        return _json(
            {
                "digest": digest,
                "path": str(final / "data.parquet"),
                "rows": len(clean),
                "columns": len(clean.columns),
                "pii_columns": changed or "none",
            }
        )

    def split_dataset(spec: str) -> str:
        loaded = load_spec(spec)
        pointer = _read_pointer(ctx, loaded, "dataset_digest")
        home = _datasets(ctx) / pointer["dataset_digest"]
        frame = pd.read_parquet(home / "data.parquet")
        split = loaded.spec.data.split
        split_key = hashlib.sha256(
            json.dumps(
                {
                    "split": split.model_dump(),
                    "seed": loaded.spec.seed,
                    "target": loaded.spec.data.target,
                    "task": loaded.spec.training.task,
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()[:16]
        final = home / "splits" / split_key
        if not (final / "split.json").exists():
            parts = data.split_frame(
                frame,
                target=loaded.spec.data.target,
                split=split,
                seed=loaded.spec.seed,
                stratify=loaded.spec.training.task == "classification",
            )
            staging = home / "splits" / f".staging-{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            digests = {}
            for name, part in parts.items():
                part.to_parquet(staging / f"{name}.parquet", index=False)
                digests[name] = data.dataset_digest(part)
            profile = data.profile_frame(parts["train"], ctx.redactor)
            (staging / "reference_profile.json").write_text(json.dumps(profile, indent=2), "utf-8")
            (staging / "split.json").write_text(
                json.dumps(
                    {
                        "key": split_key,
                        "seed": loaded.spec.seed,
                        "fractions": split.model_dump(),
                        "rows": {n: len(p) for n, p in parts.items()},
                        "digests": digests,
                    },
                    indent=2,
                ),
                "utf-8",
            )
            _publish_dir(staging, final)
        facts = json.loads((final / "split.json").read_text("utf-8"))
        _write_json_atomic(
            _pointer_path(ctx, loaded), {**pointer, "split_key": split_key, "updated_at": datetime.now(UTC).isoformat()}
        )
        return _json(
            {
                "split": split_key,
                "rows": facts["rows"],
                "digests": facts["digests"],
                "reference_profile": str(final / "reference_profile.json"),
            }
        )

    return [
        GovernedTool.from_function(
            "load_dataset",
            "Load a data set (CSV, Parquet or sklearn:NAME) within the size limit and describe "
            "its columns; no values are returned.",
            _SourceArgs,
            load_dataset,
            mutates=False,
        ),
        GovernedTool.from_function(
            "validate_dataset",
            "Validate the spec's data: schema, target classes, row counts, missing values, "
            "duplicates and leakage. Hard failures stop the pipeline.",
            _SpecArgs,
            validate_dataset,
            mutates=False,
        ),
        GovernedTool.from_function(
            "scan_pii",
            "Scan a sample of every column of the spec's data for PII and say which columns the "
            "policy drops or hashes.",
            _SpecArgs,
            scan_pii,
            mutates=False,
        ),
        GovernedTool.from_function(
            "version_dataset",
            "Drop or hash PII columns, then store the spec's data content-addressed in the "
            "workspace and return its digest.",
            _SpecArgs,
            version_dataset,
            mutates=True,
        ),
        GovernedTool.from_function(
            "split_dataset",
            "Seeded, stratified train/validation/test split of the versioned data, plus the "
            "training split's reference profile for drift checks.",
            _SpecArgs,
            split_dataset,
            mutates=True,
        ),
    ]


# --- experimentation tools -----------------------------------------------------------------


def experimentation_tools(ctx: ToolContext) -> list[GovernedTool]:
    """train_model and list_runs."""
    tracking_uri = ctx.tracking_uri or default_tracking_uri(ctx.workspace)

    def train_model(spec: str) -> str:
        loaded = load_spec(spec)
        plans = plan_search(loaded.spec, ctx.policy.training)
        pointer = _read_pointer(ctx, loaded, "split_key")
        home = _datasets(ctx) / pointer["dataset_digest"]
        split_dir = home / "splits" / pointer["split_key"]
        splits = {n: pd.read_parquet(split_dir / f"{n}.parquet") for n in ("train", "validation")}
        dataset = json.loads((home / "dataset.json").read_text("utf-8"))
        split_facts = json.loads((split_dir / "split.json").read_text("utf-8"))
        features = data.feature_columns(
            splits["train"],
            target=loaded.spec.data.target,
            sensitive=loaded.spec.data.sensitive_features,
            use_sensitive=loaded.spec.training.use_sensitive_features,
            checks=dataset["validation"],
        )
        context = TrainingContext(
            loaded=loaded,
            data_digest=pointer["dataset_digest"],
            split_key=pointer["split_key"],
            split_digests=split_facts["digests"],
            dataset_path=home / "data.parquet",
            features=features,
            reports={
                "validation_report": dataset["validation"],
                "pii_report": dataset["pii"],
                "reference_profile": json.loads((split_dir / "reference_profile.json").read_text("utf-8")),
            },
            redactor=ctx.redactor,
            n_jobs=ctx.n_jobs,
            progress=ctx.progress,
        )
        with using_store(tracking_uri) as client:
            experiment_id = ensure_experiment(
                client, loaded.spec.experiment_name, workspace=ctx.workspace, tracking_uri=tracking_uri
            )
            result = train_candidates(context, plans, splits, experiment_id=experiment_id)
        return _json({**result, "tracking_uri": ctx.redactor.redact_text(tracking_uri)})

    def list_runs(experiment: str, limit: int = 20) -> str:
        with using_store(tracking_uri) as client:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = [e.name for e in client.search_experiments(max_results=50)]
                raise InvalidInputError(
                    "unknown_experiment", f"no MLflow experiment {experiment!r}; experiments: {', '.join(names)}"
                )
            runs = client.search_runs([found.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"])
        return _json(
            [
                {
                    "run_id": r.info.run_id,
                    "name": r.info.run_name,
                    "status": r.info.status,
                    "role": r.data.tags.get("mlops.role"),
                    "best": r.data.tags.get("mlops.best"),
                    "metrics": {k: round(v, 6) for k, v in sorted(r.data.metrics.items())},
                    "failure_reason": r.data.tags.get("mlops.failure_reason"),
                }
                for r in runs
            ]
        )

    return [
        GovernedTool.from_function(
            "train_model",
            "Train the spec's allow-listed candidates with a seeded, cross-validated search and "
            "log every candidate to MLflow; returns run ids and the best candidate.",
            _SpecArgs,
            train_model,
            mutates=True,
        ),
        GovernedTool.from_function(
            "list_runs",
            "List the recent runs of an MLflow experiment with their metrics and status.",
            _ExperimentArgs,
            list_runs,
            mutates=False,
        ),
    ]
