"""Scan text, a workspace file or a registered model for prompt injection, secrets and personal data.

The report names kinds, entity types, offsets and JSON paths, never the text it found: what
it says can go to a model without carrying the payload along. Injection is the guard of
``policies.injection``; secrets and personal data are whatever the workspace's redactor
finds (``ctx.redactor.findings``), split by ``is_secret_entity``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.injection import InjectionScan, scan_value, string_leaves
from mlops_supervisor.policies.secrets_in_args import is_secret_entity
from mlops_supervisor.tools.core import ToolContext, using_store

__all__ = ["REDACTOR_CHARS", "scan_target"]

REDACTOR_CHARS = 256 * 1024
"""The most text of one target the redactor reads (its NER is the slow part); the guard reads all of it."""
_LISTED = 100  # findings listed per section; the counts cover all of them


def scan_target(
    ctx: ToolContext, *, text: str | None = None, path: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """The scan of exactly one of ``text``, a workspace file ``path`` or a registered ``model``."""
    if sum(x is not None for x in (text, path, model)) != 1:
        raise InvalidInputError("one_target", "give exactly one of text, path or model to scan")
    if text is not None:
        target, value = {"kind": "text", "chars": len(text)}, text
    elif path is not None:
        target, value = _file(ctx, path)
    else:
        assert model is not None
        target, value = _model(ctx, model)
    return _report(ctx, target, value)


def _report(ctx: ToolContext, target: dict[str, Any], value: Any) -> dict[str, Any]:
    injection = scan_value(value)
    secrets, pii, read = _entities(ctx, value)
    summary = (
        f"{injection.verdict}: {len(injection.findings)} injection finding(s)"
        + (f" ({', '.join(injection.kinds)})" if injection.kinds else "")
        + f", {sum(secrets.values())} secret(s)"
        + (f" ({', '.join(sorted(secrets))})" if secrets else "")
        + f", {sum(pii.values())} personal-data finding(s)"
        + (f" ({', '.join(sorted(pii))})" if pii else "")
    )
    return {
        "target": target,
        "verdict": injection.verdict,
        "injection": _injection_section(injection),
        "secrets": {"count": sum(secrets.values()), "by_entity": dict(sorted(secrets.items()))},
        "personal_data": {"count": sum(pii.values()), "by_entity": dict(sorted(pii.items()))},
        **({"redactor_read_chars": read} if read is not None else {}),
        "summary": summary,
    }


def _injection_section(scan: InjectionScan) -> dict[str, Any]:
    return {
        "kinds": scan.kinds,
        "count": len(scan.findings),
        "findings": [f.as_record() for f in scan.findings[:_LISTED]],
        **({"not_listed": len(scan.findings) - _LISTED} if len(scan.findings) > _LISTED else {}),
    }


def _entities(ctx: ToolContext, value: Any) -> tuple[Counter[str], Counter[str], int | None]:
    """Secrets and personal data by entity type; the characters read when the redactor stopped early."""
    secrets: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    budget = REDACTOR_CHARS
    for _, text in string_leaves(value):
        if budget <= 0:
            return secrets, pii, REDACTOR_CHARS
        for finding in ctx.redactor.findings(text[:budget]):
            (secrets if is_secret_entity(finding.entity) else pii)[finding.entity] += 1
        budget -= len(text)
    return secrets, pii, None


# --- targets -----------------------------------------------------------------------------


def _file(ctx: ToolContext, path: str) -> tuple[dict[str, Any], Any]:
    """A file inside the workspace, read as the structure its suffix says (JSON, JSON lines, CSV, Parquet) or text."""
    root = Path(ctx.workspace).resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not resolved.is_relative_to(root):
        raise InvalidInputError(
            "outside_workspace", f"{path} is outside the workspace {root}; only workspace files are scanned"
        )
    if not resolved.is_file():
        raise InvalidInputError("file_not_found", f"no file {path} in the workspace {root}")
    size = resolved.stat().st_size
    if size > ctx.max_dataset_mb * 1024 * 1024:
        raise InvalidInputError(
            "file_too_large", f"{path} is {size / 1024 / 1024:.1f} MB, over the limit of {ctx.max_dataset_mb:g} MB"
        )
    target = {"kind": "file", "path": resolved.relative_to(root).as_posix(), "bytes": size}
    suffix = resolved.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return target, _parquet(resolved)
    text = resolved.read_text("utf-8", errors="replace")
    if suffix == ".json":
        try:
            return target, json.loads(text)
        except ValueError:
            return target, text
    if suffix == ".jsonl":
        return target, [_json_or_text(line) for line in text.splitlines() if line.strip()]
    if suffix == ".csv":
        return target, list(csv.reader(io.StringIO(text)))
    return target, text


def _json_or_text(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line


def _parquet(path: Path) -> dict[str, list[str]]:
    """The text columns of a Parquet file, by column name (numbers carry no instructions)."""
    import pandas as pd

    frame = pd.read_parquet(path)
    return {
        str(column): [str(v) for v in frame[column].dropna().tolist()]
        if frame[column].dtype == object or str(frame[column].dtype) in {"string", "category"}
        else []
        for column in frame.columns
    }


def _model(ctx: ToolContext, model: str) -> tuple[dict[str, Any], Any]:
    """A registered model's description and tags, each version's, and its training run's name and tags."""
    if ctx.tracking_uri is None and not (Path(ctx.workspace) / "mlflow.db").exists():
        raise InvalidInputError(
            "unknown_model", f"no registered model {model!r}: this workspace has no MLflow store yet"
        )
    from mlflow.exceptions import MlflowException

    with using_store(ctx.store_uri) as client:
        try:
            registered = client.get_registered_model(model)
        except MlflowException:
            raise InvalidInputError("unknown_model", f"no registered model {model!r} in {ctx.store_uri}") from None
        versions = []
        for version in sorted(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version)):
            run: dict[str, Any] = {}
            if version.run_id:
                try:
                    found = client.get_run(version.run_id)
                    run = {"name": found.info.run_name or "", "tags": dict(found.data.tags)}
                except MlflowException:
                    run = {}
            versions.append(
                {
                    "version": int(version.version),
                    "description": version.description or "",
                    "tags": dict(version.tags),
                    "run": run,
                }
            )
    value = {"description": registered.description or "", "tags": dict(registered.tags), "versions": versions}
    return {"kind": "model", "model": model, "versions": len(versions)}, value
