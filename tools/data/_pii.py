"""PII in data columns: scan a sample of every column, then drop or hash the columns that hold it,
and redact, cell by cell, what is left in the text columns that are kept.

A column verdict reads a sample, so it cannot see a secret or a name in a few rows of a free-text
column that is otherwise clean; ``redact_text_cells`` reads every distinct value of every kept text
column, so such values never reach a stored data version, a split, a model or a profile.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import Finding, Redactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.policies.redaction import replace_spans
from mlops_supervisor.tools.core import ProgressFactory, no_progress

__all__ = [
    "CellRedaction",
    "apply_cell_redactions",
    "apply_pii_actions",
    "pii_hash_key",
    "redact_text_cells",
    "scan_frame_for_pii",
    "text_columns",
]


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
                # records, not {entity: count}: a key named API_KEY over a number reads as a credential
                "entities": [{"entity": e, "findings": n} for e, n in sorted(entities.items())],
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


@dataclass(frozen=True)
class CellRedaction:
    """What redacting one column's cells changes: counts by entity type for reports, replacements for the data.

    ``replacements`` maps each changed raw value to its redacted text: it lives in memory only,
    and nothing writes it (``as_record`` leaves it out).
    """

    column: str
    cells: int
    """How many cells (rows) hold a redacted value."""
    entities: dict[str, int]
    """Entity type -> how many cells held it."""
    replacements: dict[str, str] = field(repr=False)

    def as_record(self) -> dict[str, Any]:
        """The counts, for scan reports and ``dataset.json``: never a value."""
        return {
            "cells_redacted": self.cells,
            "cell_entities": [{"entity": e, "cells": n} for e, n in sorted(self.entities.items())],
        }


def text_columns(frame: pd.DataFrame) -> list[str]:
    """The columns holding text (strings or objects): where free text, and so stray PII, can sit."""
    return [c for c in frame.columns if pd.api.types.is_string_dtype(frame[c]) or frame[c].dtype == object]


# Below this many distinct values a column's cells take about a second even with NER on each: no bar.
_PROGRESS_FROM = 2_000
_BATCH = 500


def _batches(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _BATCH):
        yield values[start : start + _BATCH]


def _findings_of(detector: Redactor, values: Sequence[str]) -> list[list[Finding]]:
    """The detector's findings for each value: as one batch when it can (NER through one pipe), else one by one."""
    many = getattr(detector, "findings_many", None)
    if callable(many):
        batch: list[list[Finding]] = many(values)
        return batch
    return [detector.findings(v) for v in values]


def redact_text_cells(
    frame: pd.DataFrame,
    detector: Redactor,
    columns: Iterable[str],
    *,
    progress: ProgressFactory = no_progress,
) -> dict[str, CellRedaction]:
    """Redact every cell of the text ``columns`` of ``frame``: each distinct value passes the detector once.

    Short codes and categories cost little (the detector's prefilter skips what cannot match),
    but they are read too: a secret in a categorical column is still a secret.
    """
    counts = {c: frame[c].dropna().astype(str).value_counts(sort=False) for c in columns}
    batches = sum(-(-len(v) // _BATCH) for v in counts.values())
    opened = progress if sum(len(v) for v in counts.values()) >= _PROGRESS_FROM else no_progress
    result: dict[str, CellRedaction] = {}
    with opened(f"redacting the text cells of {len(counts)} columns", max(batches, 1)) as advance:
        for column, per_value in counts.items():
            replacements: dict[str, str] = {}
            by_entity: dict[str, int] = {}
            for values in _batches(list(per_value.index)):
                for value, found in zip(values, _findings_of(detector, values), strict=True):
                    redacted = replace_spans(value, found)  # the findings in hand: no second pass
                    if redacted == value:
                        continue
                    replacements[value] = redacted
                    for entity in {f.entity for f in found}:
                        by_entity[entity] = by_entity.get(entity, 0) + int(per_value[value])
                advance(column)
            cells = sum(int(per_value[v]) for v in replacements)
            result[column] = CellRedaction(column, cells, by_entity, replacements)
    return result


def apply_cell_redactions(frame: pd.DataFrame, redactions: dict[str, CellRedaction]) -> pd.DataFrame:
    """``frame`` with each redacted value replaced in its column (columns no longer in ``frame`` are skipped)."""
    out = frame.copy()
    for column, redaction in redactions.items():
        if column not in out.columns or not redaction.replacements:
            continue
        series = out[column]
        changed = series.notna() & series.astype(str).isin(redaction.replacements.keys())
        out.loc[changed, column] = series[changed].astype(str).map(redaction.replacements)
    return out
