"""Data handling behind the data agent's tools: load, validate, scan for PII, version, split, profile.

Plain functions over pandas frames; the tools in ``_data_tools`` wire them to the workspace.
Every refusal is an ``InvalidInputError`` with a reason code and a message that names the
value and what is allowed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from mlops_supervisor.policies import InvalidInputError, Redactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.tools._spec import DataSpec, SplitSpec

__all__ = [
    "SKLEARN_DATASETS",
    "Check",
    "apply_pii_actions",
    "dataset_digest",
    "load_table",
    "profile_frame",
    "scan_frame_for_pii",
    "split_frame",
    "validate_frame",
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


# --- validation --------------------------------------------------------------------------

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One validation finding: which check, its verdict, a reason code and what was seen."""

    check: str
    status: Status
    reason_code: str
    detail: str
    column: str | None = None

    def as_record(self) -> dict[str, str | None]:
        """Plain data for reports."""
        return {
            "check": self.check,
            "status": self.status,
            "reason_code": self.reason_code,
            "column": self.column,
            "detail": self.detail,
        }


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


def validate_frame(frame: pd.DataFrame, data: DataSpec, *, task: str) -> list[Check]:
    """Every check of the data contract, in a fixed order; ``fail`` entries stop the pipeline."""
    checks: list[Check] = []
    rows = len(frame)
    if data.target not in frame.columns:
        checks.append(
            Check(
                "target_present",
                "fail",
                "target_missing",
                f"target {data.target!r} is not a column; columns: {', '.join(map(str, frame.columns))}",
            )
        )
        return checks
    checks.append(Check("target_present", "pass", "ok", f"target {data.target!r} found"))
    missing_sensitive = [c for c in data.sensitive_features if c not in frame.columns]
    if missing_sensitive:
        checks.append(
            Check(
                "sensitive_features",
                "fail",
                "sensitive_feature_missing",
                f"sensitive features not in the data: {', '.join(missing_sensitive)}",
            )
        )
    elif data.sensitive_features:
        checks.append(Check("sensitive_features", "pass", "ok", ", ".join(data.sensitive_features)))

    bounds = data.checks
    if rows < bounds.min_rows:
        checks.append(Check("row_count", "fail", "too_few_rows", f"{rows} rows; at least {bounds.min_rows} needed"))
    elif bounds.max_rows is not None and rows > bounds.max_rows:
        checks.append(Check("row_count", "fail", "too_many_rows", f"{rows} rows; at most {bounds.max_rows} allowed"))
    else:
        checks.append(Check("row_count", "pass", "ok", f"{rows} rows"))

    target = frame[data.target]
    target_missing = int(target.isna().sum())
    if target_missing:
        checks.append(
            Check(
                "target_missing_values",
                "warn",
                "target_has_missing",
                f"{target_missing} rows have no target; they are left out",
            )
        )
    if task == "classification":
        counts = target.dropna().value_counts()
        if len(counts) < 2:
            only = ", ".join(map(repr, counts.index.tolist())) or "none"
            checks.append(
                Check(
                    "target_classes",
                    "fail",
                    "single_class_target",
                    f"target {data.target!r} has {len(counts)} class ({only}); at least 2 are needed",
                )
            )
        else:
            shares = counts / counts.sum()
            tiny = shares[shares < bounds.min_class_fraction]
            if len(tiny):
                checks.append(
                    Check(
                        "target_classes",
                        "fail",
                        "tiny_class",
                        "classes below min_class_fraction "
                        f"{bounds.min_class_fraction:g}: " + ", ".join(f"{k!r} {v:.4f}" for k, v in tiny.items()),
                    )
                )
            else:
                checks.append(
                    Check(
                        "target_classes",
                        "pass",
                        "ok",
                        ", ".join(f"{k!r} {v:.3f}" for k, v in shares.sort_index().items()),
                    )
                )
            if data.positive_class is not None and data.positive_class not in set(counts.index):
                checks.append(
                    Check(
                        "positive_class",
                        "fail",
                        "positive_class_missing",
                        f"positive_class {data.positive_class!r} is not a value of {data.target!r}; "
                        f"values: {', '.join(map(repr, counts.index.tolist()[:20]))}",
                    )
                )
    elif not pd.api.types.is_numeric_dtype(target):
        checks.append(
            Check("target_type", "fail", "target_not_numeric", f"regression needs a numeric target; got {target.dtype}")
        )

    features = [c for c in frame.columns if c != data.target]
    for column in features:
        series = frame[column]
        missing = float(series.isna().mean()) if rows else 0.0
        if missing == 1.0:
            checks.append(
                Check("all_null", "warn", "all_null_column", f"{column!r} is empty; it is not trained on", column)
            )
            continue
        if series.nunique(dropna=True) <= 1:
            checks.append(
                Check(
                    "constant", "warn", "constant_column", f"{column!r} holds one value; it is not trained on", column
                )
            )
            continue
        if missing > bounds.max_missing_fraction:
            checks.append(
                Check(
                    "missing_values",
                    "warn",
                    "many_missing",
                    f"{column!r} misses {missing:.1%} of values (over {bounds.max_missing_fraction:.0%}); imputed",
                    column,
                )
            )
        if _identical_to_target(series, target):
            checks.append(
                Check(
                    "leakage",
                    "fail",
                    "target_leakage",
                    f"{column!r} determines the target one to one; add it to data.drop_columns",
                    column,
                )
            )
        elif _id_like(series, rows):
            checks.append(
                Check(
                    "leakage",
                    "warn",
                    "id_like_column",
                    f"{column!r} has a distinct value in every row, like an ID; consider data.drop_columns",
                    column,
                )
            )
    total_missing = float(frame[features].isna().mean().mean()) if features else 0.0
    checks.append(Check("missing_values", "pass", "ok", f"{total_missing:.2%} of feature values missing overall"))
    duplicates = int(frame.duplicated().sum())
    checks.append(
        Check(
            "duplicates",
            "warn" if duplicates else "pass",
            "duplicate_rows" if duplicates else "ok",
            f"{duplicates} duplicate rows ({duplicates / max(rows, 1):.2%})",
        )
    )
    return checks


def _identical_to_target(series: pd.Series, target: pd.Series) -> bool:
    both = pd.DataFrame({"x": series, "y": target}).dropna()
    if both.empty or both["y"].nunique() < 2:
        return False
    # one to one: each feature value maps to one target value and back
    return bool(both.groupby("x")["y"].nunique().max() == 1 and both.groupby("y")["x"].nunique().max() == 1)


def _id_like(series: pd.Series, rows: int) -> bool:
    if rows < 20 or pd.api.types.is_float_dtype(series):
        return False
    return bool(series.nunique(dropna=True) == rows)


# --- PII ---------------------------------------------------------------------------------


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


# --- split and profile -------------------------------------------------------------------


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
