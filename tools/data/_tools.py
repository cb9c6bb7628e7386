"""The data agent's tools: load, validate, scan for PII, version and split a data set, bound to a workspace."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, Field

from mlops_supervisor.policies import InvalidInputError, Redactor
from mlops_supervisor.tools._spec import LoadedSpec, load_spec
from mlops_supervisor.tools.core import GovernedTool, SpecArgs, ToolContext, publish_dir, to_json, write_json_atomic
from mlops_supervisor.tools.data._checks import validate_frame
from mlops_supervisor.tools.data._frames import dataset_digest, load_table, profile_frame, split_frame
from mlops_supervisor.tools.data._pii import (
    CellRedaction,
    apply_cell_redactions,
    apply_pii_actions,
    pii_hash_key,
    redact_text_cells,
    scan_frame_for_pii,
    text_columns,
)
from mlops_supervisor.tools.data._store import data_key, datasets_dir, pointer_path, read_pointer

__all__ = [
    "data_tools",
    "load_dataset",
    "scan_pii",
    "split_dataset",
    "split_key",
    "validate_dataset",
    "version_dataset",
]


class _SourceArgs(BaseModel):
    source: str = Field(description="a CSV or Parquet path, or sklearn:NAME")


def _load(ctx: ToolContext, loaded: LoadedSpec) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The spec's table without ``data.drop_columns``, and its facts with the source redacted."""
    frame, facts = load_table(loaded.resolve_source(), max_mb=ctx.max_dataset_mb)
    missing = [c for c in loaded.spec.data.drop_columns if c not in frame.columns]
    if missing:
        raise InvalidInputError("drop_column_missing", f"data.drop_columns names columns not in the data: {missing}")
    facts["source"] = ctx.redactor.redact_text(str(facts["source"]))
    return frame.drop(columns=list(loaded.spec.data.drop_columns)), facts


def _validate(frame: pd.DataFrame, loaded: LoadedSpec) -> list[dict[str, Any]]:
    """Every data-contract check as a record; ``InvalidInputError`` (first failure's code) when any fails."""
    checks = validate_frame(frame, loaded.spec.data, task=loaded.spec.training.task)
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise InvalidInputError(
            failed[0].reason_code,
            "data validation failed: " + "; ".join(f"{c.reason_code}: {c.detail}" for c in failed),
        )
    return [c.as_record() for c in checks]


@dataclass(frozen=True)
class _Scan:
    """A frame's PII scan: the column verdicts (with cell counts) and the cell redactions of the kept text columns."""

    report: list[dict[str, Any]]
    cells: dict[str, CellRedaction]


_SCANS: dict[tuple[str, str, int, tuple[str, ...]], _Scan] = {}


def _scan_frame(ctx: ToolContext, frame: pd.DataFrame, loaded: LoadedSpec) -> _Scan:
    """Column verdicts first; then, unless a protected column is refused, every cell of the kept text columns.

    The target and the sensitive features are read cell by cell too: a label that holds a secret is
    redacted like any other cell (and a class that no longer splits stops the split, visibly).
    """
    rules = ctx.policy.pii
    protected = (loaded.spec.data.target, *loaded.spec.data.sensitive_features)
    detector: Redactor = ctx.pii_detector(rules)
    report = scan_frame_for_pii(frame, detector, rules, seed=loaded.spec.seed, protected=protected)
    if any(e["action"] == "refuse" for e in report):
        return _Scan(report, {})
    kept = {e["column"] for e in report if e["action"] == "keep"}
    cells = redact_text_cells(frame, detector, [c for c in text_columns(frame) if c in kept], progress=ctx.progress)
    return _Scan([{**e, **cells[e["column"]].as_record()} if e["column"] in cells else e for e in report], cells)


def _scan(ctx: ToolContext, frame: pd.DataFrame, loaded: LoadedSpec) -> _Scan:
    """The PII scan of ``frame``; kept in memory by content digest so version reuses scan's work."""
    rules = ctx.policy.pii
    protected = (loaded.spec.data.target, *loaded.spec.data.sensitive_features)
    key = (dataset_digest(frame), rules.model_dump_json(), loaded.spec.seed, protected)
    if key not in _SCANS:
        while len(_SCANS) >= 8:
            _SCANS.pop(next(iter(_SCANS)))
        _SCANS[key] = _scan_frame(ctx, frame, loaded)
    scan = _SCANS[key]
    refused = [e for e in scan.report if e["action"] == "refuse"]
    if refused:
        raise InvalidInputError(
            "pii_in_protected_column",
            "PII found in the target or a sensitive feature, which cannot be dropped or hashed: "
            + "; ".join(f"{e['column']!r}: {e['why']}" for e in refused),
        )
    return scan


def _redacted_cells(scan: _Scan) -> dict[str, dict[str, Any]]:
    """Per kept text column with redacted cells: how many, and of which entity types (never a value)."""
    return {c: r.as_record() for c, r in scan.cells.items() if r.cells}


def load_dataset(ctx: ToolContext, source: str) -> str:
    """The shape, column types, missing shares and distinct counts of a table, as JSON; never its values."""
    frame, facts = load_table(source, max_mb=ctx.max_dataset_mb)
    facts["source"] = ctx.redactor.redact_text(source)
    facts["missing"] = {c: round(float(v), 4) for c, v in frame.isna().mean().items() if v}
    facts["distinct"] = {c: int(frame[c].nunique()) for c in frame.columns}
    return to_json(facts)


def validate_dataset(ctx: ToolContext, spec: str) -> str:
    """The data contract's verdict on the spec's data, as JSON; ``InvalidInputError`` on a hard failure."""
    loaded = load_spec(spec)
    frame, facts = _load(ctx, loaded)
    checks = _validate(frame, loaded)
    return to_json(
        {
            "ok": True,
            "rows": facts["rows"],
            "checks": [c for c in checks if c["status"] != "pass"] or "every check passed",
            "passed": sum(c["status"] == "pass" for c in checks),
        }
    )


def scan_pii(ctx: ToolContext, spec: str) -> str:
    """Which columns of the spec's data hold PII and what the policy does with them, as JSON."""
    loaded = load_spec(spec)
    frame, _ = _load(ctx, loaded)
    scan = _scan(ctx, frame, loaded)
    report = scan.report
    flagged = [e for e in report if e["action"] != "keep"]
    cells = _redacted_cells(scan)
    return to_json(
        {
            "columns_scanned": len(report),
            "pii_columns": flagged,
            "action": ctx.policy.pii.action,
            "redacted_cells": cells,
            "summary": (
                f"{len(flagged)} of {len(report)} columns hold PII and will be {ctx.policy.pii.action}"
                f"{'ped' if ctx.policy.pii.action == 'drop' else 'ed'} before anything trains or is logged"
                if flagged
                else f"no PII found in {len(report)} columns"
            )
            + (
                f"; {sum(c['cells_redacted'] for c in cells.values())} cells of {len(cells)} kept text column(s) "
                "hold PII or secrets and will be redacted"
                if cells
                else ""
            ),
        }
    )


def version_dataset(ctx: ToolContext, spec: str) -> str:
    """Store the spec's checked, PII-cleaned data content-addressed and point the spec at it; its digest, as JSON."""
    loaded = load_spec(spec)
    frame, facts = _load(ctx, loaded)
    checks = _validate(frame, loaded)
    scan = _scan(ctx, frame, loaded)
    report = scan.report
    clean = _without_pii(ctx, frame, scan)
    digest = dataset_digest(clean)
    final = datasets_dir(ctx) / digest
    if not (final / "dataset.json").exists():
        _write_dataset_dir(ctx, final, clean, _dataset_record(loaded, clean, digest, facts, checks, report))
    write_json_atomic(
        pointer_path(ctx, loaded),
        {
            "spec": str(loaded.path),
            "data_key": data_key(loaded, ctx.policy.pii),
            "dataset_digest": digest,
            "updated_at": datetime.now(UTC).isoformat(),
        },
    )
    changed = {e["column"]: e["action"] for e in report if e["action"] != "keep"}
    return to_json(
        {
            "digest": digest,
            "path": str(final / "data.parquet"),
            "rows": len(clean),
            "columns": len(clean.columns),
            "pii_columns": changed or "none",
            "redacted_cells": {c: r["cells_redacted"] for c, r in _redacted_cells(scan).items()} or "none",
        }
    )


def _without_pii(ctx: ToolContext, frame: pd.DataFrame, scan: _Scan) -> pd.DataFrame:
    """``frame`` with the PII columns dropped or hashed (the workspace's key only when hashing), and the cells
    of the kept text columns redacted."""
    report = scan.report
    key = pii_hash_key(ctx.workspace, ctx.pii_hash_key) if any(e["action"] == "hash" for e in report) else b""
    return apply_cell_redactions(apply_pii_actions(frame, report, hash_key=key), scan.cells)


def _dataset_record(
    loaded: LoadedSpec,
    clean: pd.DataFrame,
    digest: str,
    facts: dict[str, Any],
    checks: list[dict[str, Any]],
    report: list[dict[str, Any]],
) -> dict[str, Any]:
    """The facts ``dataset.json`` keeps beside a versioned data set: source, columns and both reports."""
    return {
        "digest": digest,
        "source": facts["source"],
        "format": facts["format"],
        "rows": len(clean),
        "columns": {c: str(t) for c, t in clean.dtypes.items()},
        "target": loaded.spec.data.target,
        "validation": checks,
        "pii": report,
        "created_at": datetime.now(UTC).isoformat(),
    }


def _write_dataset_dir(ctx: ToolContext, final: Path, clean: pd.DataFrame, record: dict[str, Any]) -> None:
    """Write ``data.parquet`` and ``dataset.json`` aside, then publish them as ``final`` in one step."""
    staging = datasets_dir(ctx) / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    clean.to_parquet(staging / "data.parquet", index=False)
    (staging / "dataset.json").write_text(json.dumps(record, indent=2, default=str), "utf-8")
    publish_dir(staging, final)


def split_dataset(ctx: ToolContext, spec: str) -> str:
    """Split the spec's versioned data (seeded, stratified) with a reference profile; the split's key, as JSON."""
    loaded = load_spec(spec)
    pointer = read_pointer(ctx, loaded, "dataset_digest")
    home = datasets_dir(ctx) / pointer["dataset_digest"]
    frame = pd.read_parquet(home / "data.parquet")
    key = split_key(loaded)
    final = home / "splits" / key
    if not (final / "split.json").exists():
        _write_split_dir(ctx, loaded, frame, key, final)
    facts = json.loads((final / "split.json").read_text("utf-8"))
    write_json_atomic(
        pointer_path(ctx, loaded), {**pointer, "split_key": key, "updated_at": datetime.now(UTC).isoformat()}
    )
    return to_json(
        {
            "split": key,
            "rows": facts["rows"],
            "digests": facts["digests"],
            "reference_profile": str(final / "reference_profile.json"),
        }
    )


def split_key(loaded: LoadedSpec) -> str:
    """What a split depends on, hashed: the fractions, seed, target and task (16 hex digits)."""
    material = {
        "split": loaded.spec.data.split.model_dump(),
        "seed": loaded.spec.seed,
        "target": loaded.spec.data.target,
        "task": loaded.spec.training.task,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _write_split_dir(ctx: ToolContext, loaded: LoadedSpec, frame: pd.DataFrame, key: str, final: Path) -> None:
    """Write the split parquet files, the training split's profile and ``split.json`` aside, then publish ``final``."""
    split = loaded.spec.data.split
    parts = split_frame(
        frame,
        target=loaded.spec.data.target,
        split=split,
        seed=loaded.spec.seed,
        stratify=loaded.spec.training.task == "classification",
    )
    staging = final.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    digests = {}
    for name, part in parts.items():
        part.to_parquet(staging / f"{name}.parquet", index=False)
        digests[name] = dataset_digest(part)
    profile = profile_frame(parts["train"], ctx.redactor)
    (staging / "reference_profile.json").write_text(json.dumps(profile, indent=2), "utf-8")
    (staging / "split.json").write_text(
        json.dumps(
            {
                "key": key,
                "seed": loaded.spec.seed,
                "fractions": split.model_dump(),
                "rows": {n: len(p) for n, p in parts.items()},
                "digests": digests,
            },
            indent=2,
        ),
        "utf-8",
    )
    publish_dir(staging, final)


def data_tools(ctx: ToolContext) -> list[GovernedTool]:
    """load_dataset, validate_dataset, scan_pii, version_dataset and split_dataset, bound to ``ctx``."""
    return [
        GovernedTool.from_function(
            "load_dataset",
            "Load a data set (CSV, Parquet or sklearn:NAME) within the size limit and describe "
            "its columns; no values are returned.",
            _SourceArgs,
            partial(load_dataset, ctx),
            mutates=False,
        ),
        GovernedTool.from_function(
            "validate_dataset",
            "Validate the spec's data: schema, target classes, row counts, missing values, "
            "duplicates and leakage. Hard failures stop the pipeline.",
            SpecArgs,
            partial(validate_dataset, ctx),
            mutates=False,
        ),
        GovernedTool.from_function(
            "scan_pii",
            "Scan a sample of every column of the spec's data for PII and say which columns the "
            "policy drops or hashes, and how many cells of the kept text columns hold PII or secrets.",
            SpecArgs,
            partial(scan_pii, ctx),
            mutates=False,
        ),
        GovernedTool.from_function(
            "version_dataset",
            "Drop or hash PII columns and redact PII and secrets cell by cell in the kept text columns, "
            "then store the spec's data content-addressed in the workspace and return its digest.",
            SpecArgs,
            partial(version_dataset, ctx),
            mutates=True,
        ),
        GovernedTool.from_function(
            "split_dataset",
            "Seeded, stratified train/validation/test split of the versioned data, plus the "
            "training split's reference profile for drift checks.",
            SpecArgs,
            partial(split_dataset, ctx),
            mutates=True,
        ),
    ]
