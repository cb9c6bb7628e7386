"""Data sets as frames: load within limits, digest, split, profile, pick the feature columns.

Plain functions over pandas frames; the tools in ``_tools`` wire them to the workspace.
Every refusal is an ``InvalidInputError`` with a reason code and a message that names the
value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError, Redactor
from mlops_supervisor.tools._spec import SplitSpec

__all__ = [
    "SKLEARN_DATASETS",
    "dataset_digest",
    "feature_columns",
    "load_table",
    "normalize_frame",
    "profile_frame",
    "split_frame",
]

SKLEARN_DATASETS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
"""The data sets bundled inside scikit-learn (nothing is downloaded)."""

_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": pd.read_csv,
    ".parquet": pd.read_parquet,
    ".pq": pd.read_parquet,
}

_MB = 1024 * 1024


def _load_sklearn(name: str) -> pd.DataFrame:
    if name not in SKLEARN_DATASETS:
        raise InvalidInputError(
            "unknown_dataset",
            f"sklearn:{name} is not a bundled scikit-learn data set; allowed: "
            + ", ".join(f"sklearn:{n}" for n in SKLEARN_DATASETS),
        )
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    frame: pd.DataFrame = bunch.frame
    return frame


def normalize_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Column names as stripped strings, categoricals and objects as strings, a fresh index.

    The same table read from CSV or Parquet normalizes to the same frame, so it gets the
    same digest.
    """
    names = [str(c).strip() for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InvalidInputError("duplicate_columns", f"column names appear twice: {', '.join(duplicated)}")
    out = frame.set_axis(names, axis=1).reset_index(drop=True)
    for column in out.columns:
        series = out[column]
        if isinstance(series.dtype, pd.CategoricalDtype) or series.dtype == object:
            out[column] = series.astype("str")  # missing values stay missing
    return out


def load_table(source: str, *, max_mb: float) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load ``source`` (CSV, Parquet or ``sklearn:NAME``) within ``max_mb``; the frame and facts about it."""
    if source.startswith("sklearn:"):
        frame = _load_sklearn(source.removeprefix("sklearn:"))
        fmt, file_bytes = "sklearn", None
    else:
        path = Path(source)
        fmt = path.suffix.lower()
        if fmt not in _READERS:
            raise InvalidInputError(
                "unknown_format",
                f"unknown data format {fmt or '(none)'!r} of {source}; allowed: .csv, .parquet, .pq or sklearn:NAME",
            )
        if not path.is_file():
            raise InvalidInputError("data_not_found", f"data file {source} does not exist")
        file_bytes = path.stat().st_size
        if file_bytes > max_mb * _MB:
            raise InvalidInputError(
                "dataset_too_large",
                f"data file {source} is {file_bytes / _MB:.1f} MB, over the limit of {max_mb:g} MB "
                "(MLOPS_MAX_DATASET_MB)",
            )
        try:
            frame = _READERS[fmt](path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file, named as such
            raise InvalidInputError(
                "data_unreadable", f"data file {source} cannot be read as {fmt}: {type(exc).__name__}: {exc}"
            ) from None
    memory = int(frame.memory_usage(deep=True).sum())
    if memory > max_mb * _MB:
        raise InvalidInputError(
            "dataset_too_large",
            f"data set {source} takes {memory / _MB:.1f} MB in memory, over the limit of {max_mb:g} MB "
            "(MLOPS_MAX_DATASET_MB)",
        )
    frame = normalize_frame(frame)
    facts = {
        "source": source,
        "format": fmt.lstrip("."),
        "rows": len(frame),
        "columns": len(frame.columns),
        "file_bytes": file_bytes,
        "memory_mb": round(memory / _MB, 2),
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
    }
    return frame, facts


def dataset_digest(frame: pd.DataFrame) -> str:
    """sha256 over the schema and every row of a normalized frame (row order counts)."""
    h = hashlib.sha256()
    h.update(json.dumps([[c, str(t)] for c, t in frame.dtypes.items()]).encode("utf-8"))
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def split_frame(
    frame: pd.DataFrame, *, target: str, split: SplitSpec, seed: int, stratify: bool
) -> dict[str, pd.DataFrame]:
    """Seeded train/validation/test frames, stratified on the target for classification."""
    from sklearn.model_selection import train_test_split

    labelled = frame[frame[target].notna()].reset_index(drop=True)
    try:
        rest, test = train_test_split(
            labelled, test_size=split.test, random_state=seed, stratify=labelled[target] if stratify else None
        )
        train, validation = train_test_split(
            rest,
            test_size=split.validation / (1 - split.test),
            random_state=seed,
            stratify=rest[target] if stratify else None,
        )
    except ValueError as exc:
        raise InvalidInputError("split_impossible", f"the data cannot be split as the spec asks: {exc}") from None
    return {
        "train": train.reset_index(drop=True),
        "validation": validation.reset_index(drop=True),
        "test": test.reset_index(drop=True),
    }


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def profile_frame(frame: pd.DataFrame, redactor: Redactor, *, top: int = 50) -> dict[str, Any]:
    """Per-column distributions of a split: decile edges and shares for numbers, shares for categories.

    Drift checks later compare live traffic against this. Category labels pass through the
    redactor, so a value that slipped past the PII scan does not reach an artifact.
    """
    columns: dict[str, Any] = {}
    for column in frame.columns:
        series = frame[column]
        present = series.dropna()
        base = {"count": len(series), "missing": round(float(series.isna().mean()), 6)}
        if not _is_text(series) and not pd.api.types.is_bool_dtype(series):
            values = present.astype(float)
            edges = np.unique(np.quantile(values, np.linspace(0, 1, 11))) if len(values) else np.array([])
            counts = np.histogram(values, bins=edges)[0] if len(edges) > 1 else np.array([len(values)])
            columns[column] = {
                "kind": "numeric",
                **base,
                "mean": _finite(values.mean()) if len(values) else None,
                "std": _finite(values.std()) if len(values) > 1 else None,
                "min": _finite(values.min()) if len(values) else None,
                "max": _finite(values.max()) if len(values) else None,
                "bin_edges": [_finite(e) for e in edges],
                "bin_shares": [round(float(c) / max(len(values), 1), 6) for c in counts],
            }
        else:
            shares = present.astype(str).value_counts(normalize=True)
            head = shares.iloc[:top]
            frequencies = {redactor.redact_text(str(k)): round(float(v), 6) for k, v in head.items()}
            if len(shares) > top:
                frequencies["__other__"] = round(float(shares.iloc[top:].sum()), 6)
            columns[column] = {"kind": "categorical", **base, "distinct": len(shares), "shares": frequencies}
    return {"rows": len(frame), "columns": columns}


def feature_columns(
    frame: pd.DataFrame,
    *,
    target: str,
    sensitive: tuple[str, ...],
    use_sensitive: bool,
    checks: list[Mapping[str, Any]],
) -> list[str]:
    """The columns a model trains on: not the target, not empty or constant, sensitive ones only when asked."""
    skip = {c["column"] for c in checks if c["reason_code"] in {"all_null_column", "constant_column"}}
    return [c for c in frame.columns if c != target and c not in skip and (use_sensitive or c not in sensitive)]
