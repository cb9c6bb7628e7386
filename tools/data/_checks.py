"""The data contract: the checks a data set must pass before it is versioned.

Each check is a small function over the frame and the spec's data section that returns its
findings (pass, warn or fail, with a reason code); ``validate_frame`` runs them in order.
Adding a check is adding one function to ``CHECKS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from mlops_supervisor.tools._spec import DataSpec

__all__ = ["CHECKS", "COLUMN_CHECKS", "COLUMN_EXCLUSIONS", "Check", "DataUnderTest", "validate_frame"]

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


@dataclass(frozen=True)
class DataUnderTest:
    """What every check reads: the frame, the spec's data section and the task."""

    frame: pd.DataFrame
    data: DataSpec
    task: str

    @property
    def rows(self) -> int:
        """How many rows the data set has."""
        return len(self.frame)

    @property
    def target(self) -> pd.Series:
        """The target column."""
        return self.frame[self.data.target]

    @property
    def features(self) -> list[str]:
        """Every column but the target."""
        return [c for c in self.frame.columns if c != self.data.target]


DataCheck = Callable[[DataUnderTest], list[Check]]
"""A check of the whole data set: its findings, none when it has nothing to say."""

ColumnCheck = Callable[[DataUnderTest, str], Check | None]
"""A check of one feature column: a finding, or ``None``."""


def check_target_present(d: DataUnderTest) -> list[Check]:
    """The target is a column; without it no other check means anything."""
    if d.data.target not in d.frame.columns:
        columns = ", ".join(map(str, d.frame.columns))
        return [
            Check(
                "target_present",
                "fail",
                "target_missing",
                f"target {d.data.target!r} is not a column; columns: {columns}",
            )
        ]
    return [Check("target_present", "pass", "ok", f"target {d.data.target!r} found")]


def check_sensitive_features(d: DataUnderTest) -> list[Check]:
    """Every sensitive feature the spec names is a column."""
    missing = [c for c in d.data.sensitive_features if c not in d.frame.columns]
    if missing:
        detail = f"sensitive features not in the data: {', '.join(missing)}"
        return [Check("sensitive_features", "fail", "sensitive_feature_missing", detail)]
    if d.data.sensitive_features:
        return [Check("sensitive_features", "pass", "ok", ", ".join(d.data.sensitive_features))]
    return []


def check_row_count(d: DataUnderTest) -> list[Check]:
    """The row count is within the spec's bounds."""
    bounds = d.data.checks
    if d.rows < bounds.min_rows:
        return [Check("row_count", "fail", "too_few_rows", f"{d.rows} rows; at least {bounds.min_rows} needed")]
    if bounds.max_rows is not None and d.rows > bounds.max_rows:
        return [Check("row_count", "fail", "too_many_rows", f"{d.rows} rows; at most {bounds.max_rows} allowed")]
    return [Check("row_count", "pass", "ok", f"{d.rows} rows")]


def check_target_missing(d: DataUnderTest) -> list[Check]:
    """Rows without a target are left out, with a warning."""
    missing = int(d.target.isna().sum())
    if not missing:
        return []
    return [
        Check(
            "target_missing_values", "warn", "target_has_missing", f"{missing} rows have no target; they are left out"
        )
    ]


def check_target_classes(d: DataUnderTest) -> list[Check]:
    """A classification target has two or more classes, none tiny, and holds the positive class."""
    if d.task != "classification":
        return []
    counts = d.target.dropna().value_counts()
    if len(counts) < 2:
        only = ", ".join(map(repr, counts.index.tolist())) or "none"
        detail = f"target {d.data.target!r} has {len(counts)} class ({only}); at least 2 are needed"
        return [Check("target_classes", "fail", "single_class_target", detail)]
    floor = d.data.checks.min_class_fraction
    shares = counts / counts.sum()
    tiny = shares[shares < floor]
    if len(tiny):
        detail = f"classes below min_class_fraction {floor:g}: " + ", ".join(f"{k!r} {v:.4f}" for k, v in tiny.items())
        found = [Check("target_classes", "fail", "tiny_class", detail)]
    else:
        detail = ", ".join(f"{k!r} {v:.3f}" for k, v in shares.sort_index().items())
        found = [Check("target_classes", "pass", "ok", detail)]
    positive = d.data.positive_class
    if positive is not None and positive not in set(counts.index):
        values = ", ".join(map(repr, counts.index.tolist()[:20]))
        detail = f"positive_class {positive!r} is not a value of {d.data.target!r}; values: {values}"
        found.append(Check("positive_class", "fail", "positive_class_missing", detail))
    return found


def check_target_type(d: DataUnderTest) -> list[Check]:
    """A regression target is numeric."""
    if d.task == "classification" or pd.api.types.is_numeric_dtype(d.target):
        return []
    detail = f"regression needs a numeric target; got {d.target.dtype}"
    return [Check("target_type", "fail", "target_not_numeric", detail)]


def column_empty(d: DataUnderTest, column: str) -> Check | None:
    """A column with no values is not trained on."""
    if d.rows and d.frame[column].isna().all():
        return Check("all_null", "warn", "all_null_column", f"{column!r} is empty; it is not trained on", column)
    return None


def column_constant(d: DataUnderTest, column: str) -> Check | None:
    """A column with one value is not trained on."""
    if d.frame[column].nunique(dropna=True) <= 1:
        return Check("constant", "warn", "constant_column", f"{column!r} holds one value; it is not trained on", column)
    return None


def column_missing(d: DataUnderTest, column: str) -> Check | None:
    """A column missing more than the spec allows is imputed, with a warning."""
    missing = float(d.frame[column].isna().mean())
    limit = d.data.checks.max_missing_fraction
    if missing > limit:
        detail = f"{column!r} misses {missing:.1%} of values (over {limit:.0%}); imputed"
        return Check("missing_values", "warn", "many_missing", detail, column)
    return None


def column_leakage(d: DataUnderTest, column: str) -> Check | None:
    """A column that mirrors the target fails; one with a distinct value in every row warns."""
    series = d.frame[column]
    if _identical_to_target(series, d.target):
        detail = f"{column!r} determines the target one to one; add it to data.drop_columns"
        return Check("leakage", "fail", "target_leakage", detail, column)
    if _id_like(series, d.rows):
        detail = f"{column!r} has a distinct value in every row, like an ID; consider data.drop_columns"
        return Check("leakage", "warn", "id_like_column", detail, column)
    return None


COLUMN_EXCLUSIONS: tuple[ColumnCheck, ...] = (column_empty, column_constant)
"""Per column, in order: the first finding leaves the column out of training and ends its checks."""

COLUMN_CHECKS: tuple[ColumnCheck, ...] = (column_missing, column_leakage)
"""Per column that is trained on: each finding is reported."""


def check_feature_columns(d: DataUnderTest) -> list[Check]:
    """Every feature column, one after another, through the column checks."""
    found: list[Check] = []
    for column in d.features:
        excluded = next((c for check in COLUMN_EXCLUSIONS if (c := check(d, column)) is not None), None)
        if excluded is not None:
            found.append(excluded)
            continue
        found.extend(c for check in COLUMN_CHECKS if (c := check(d, column)) is not None)
    return found


def check_overall_missing(d: DataUnderTest) -> list[Check]:
    """How much of the feature values is missing overall (informational)."""
    share = float(d.frame[d.features].isna().mean().mean()) if d.features else 0.0
    return [Check("missing_values", "pass", "ok", f"{share:.2%} of feature values missing overall")]


def check_duplicates(d: DataUnderTest) -> list[Check]:
    """Duplicate rows warn."""
    duplicates = int(d.frame.duplicated().sum())
    detail = f"{duplicates} duplicate rows ({duplicates / max(d.rows, 1):.2%})"
    return [Check("duplicates", "warn" if duplicates else "pass", "duplicate_rows" if duplicates else "ok", detail)]


CHECKS: tuple[DataCheck, ...] = (
    check_sensitive_features,
    check_row_count,
    check_target_missing,
    check_target_classes,
    check_target_type,
    check_feature_columns,
    check_overall_missing,
    check_duplicates,
)
"""The data contract after the target is found, in report order. Adding a check is adding a function here."""


def validate_frame(frame: pd.DataFrame, data: DataSpec, *, task: str) -> list[Check]:
    """Every check of the data contract, in a fixed order; ``fail`` entries stop the pipeline."""
    subject = DataUnderTest(frame, data, task)
    found = check_target_present(subject)
    if any(c.status == "fail" for c in found):
        return found
    for check in CHECKS:
        found.extend(check(subject))
    return found


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
