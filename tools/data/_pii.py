"""PII in data columns: scan a sample of every column, then drop or hash the columns that hold it."""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import Redactor
from mlops_supervisor.policies.policy import PiiRules

__all__ = ["apply_pii_actions", "pii_hash_key", "scan_frame_for_pii"]


def _sample_values(series: pd.Series, size: int, seed: int) -> list[str]:
    values = pd.unique(series.dropna())
    if len(values) > size:
        rng = np.random.default_rng(seed)
        values = values[np.sort(rng.choice(len(values), size=size, replace=False))]
    return [str(v)[:200] for v in values]


def scan_frame_for_pii(
    frame: pd.DataFrame, detector: Redactor, rules: PiiRules, *, seed: int, protected: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """For every column: the sampled distinct values, how many hold a PII finding, and the action.

    A column's values are scanned as one text, a value per line, so the NER model runs once
    per column; a finding counts for every value its span overlaps.
    """
    report = []
    for column in frame.columns:
        values = _sample_values(frame[column], rules.sample_size, seed)
        hits = 0
        entities: dict[str, int] = {}
        if values:
            text = "\n".join(values)
            starts = np.cumsum([0] + [len(v) + 1 for v in values[:-1]])
            flagged = np.zeros(len(values), dtype=bool)
            for finding in detector.findings(text):
                if finding.entity not in rules.entities:
                    continue
                first = int(np.searchsorted(starts, finding.start, side="right")) - 1
                last = int(np.searchsorted(starts, max(finding.end - 1, finding.start), side="right")) - 1
                flagged[first : last + 1] = True
                entities[finding.entity] = entities.get(finding.entity, 0) + 1
            hits = int(flagged.sum())
        fraction = hits / len(values) if values else 0.0
        holds_pii = fraction >= rules.min_fraction
        if holds_pii and column in protected:
            action = "refuse"
        elif holds_pii:
            action = rules.action
        else:
            action = "keep"
        report.append(
            {
                "column": column,
                "sampled": len(values),
                "hits": hits,
                "fraction": round(fraction, 4),
                "entities": dict(sorted(entities.items())),
                "action": action,
                "why": (
                    f"{hits} of {len(values)} sampled values hold "
                    + ", ".join(sorted(entities))
                    + f" (at least {rules.min_fraction:.0%} makes a PII column)"
                    if holds_pii
                    else f"{hits} of {len(values)} sampled values hold PII"
                ),
            }
        )
    return report


def apply_pii_actions(frame: pd.DataFrame, report: list[dict[str, Any]], *, hash_key: bytes) -> pd.DataFrame:
    """Drop or hash the columns the scan marked; a keyed hash keeps joins possible without the values."""
    out = frame.copy()
    for entry in report:
        column = entry["column"]
        if entry["action"] == "drop":
            out = out.drop(columns=[column])
        elif entry["action"] == "hash":
            out[column] = (
                out[column]
                .map(lambda v: None if pd.isna(v) else hmac.new(hash_key, str(v).encode(), "sha256").hexdigest()[:16])
                .astype("str")
            )
    return out


def pii_hash_key(workspace: Path, override: str | None) -> bytes:
    """The HMAC key for hashed PII columns: ``override`` or the workspace's own key (created 0600)."""
    if override:
        return override.encode("utf-8")
    path = workspace / "keys" / "pii-hash.key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(32).hex().encode())
    return path.read_bytes().strip()
