"""Data handling: loading within limits, digests, validation checks, the PII scan, splits and profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.policies.redaction import PatternRedactor
from mlops_supervisor.tools import data
from mlops_supervisor.tools._spec import DataSpec, SplitSpec
from tests.conftest import ADULT

FIRST = ["James", "Maria", "Wei", "Aisha", "Robert", "Emily", "Carlos", "Olga", "Fatima", "Daniel", "Sofia", "Kenji"]
LAST = ["Smith", "Garcia", "Chen", "Khan", "Johnson", "Davis", "Ruiz", "Petrova", "Noor", "Brown", "Rossi", "Tanaka"]


def planted_pii(rows: int, seed: int = 0) -> pd.DataFrame:
    """Names, e-mail addresses and phone numbers, one per row."""
    rng = np.random.default_rng(seed)
    first, last = rng.choice(FIRST, rows), rng.choice(LAST, rows)
    return pd.DataFrame(
        {
            "customer_name": [f"{f} {s}" for f, s in zip(first, last, strict=True)],
            "contact_email": [
                f"{f.lower()}.{s.lower()}{i}@example.com" for i, (f, s) in enumerate(zip(first, last, strict=True))
            ],
            "phone": [f"(415) 555-{1000 + i % 9000:04d}" for i in range(rows)],
        }
    )


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    frame, _ = data.load_table(str(ADULT), max_mb=1024)
    return frame


def test_load_refuses_what_it_cannot_or_may_not_read(tmp_path: Path) -> None:
    """Missing files, unknown formats, unknown bundled sets and sets over the size limit each get a reason code."""
    cases = [
        (str(tmp_path / "nope.csv"), 1024.0, "data_not_found"),
        (str(tmp_path / "table.xlsx"), 1024.0, "unknown_format"),
        ("sklearn:titanic", 1024.0, "unknown_dataset"),
        (str(ADULT), 1.0, "dataset_too_large"),
    ]
    for source, limit, code in cases:
        with pytest.raises(InvalidInputError) as caught:
            data.load_table(source, max_mb=limit)
        assert caught.value.reason_code == code, source
    with pytest.raises(InvalidInputError, match=r"takes \d+\.\d MB in memory, over the limit of 1 MB"):
        data.load_table(str(ADULT), max_mb=1)


def test_bundled_sklearn_set_loads_without_network() -> None:
    """sklearn:iris comes from scikit-learn's own files."""
    frame, facts = data.load_table("sklearn:iris", max_mb=10)
    assert facts["rows"] == 150 and "target" in frame.columns


def test_digest_follows_content_not_format(tmp_path: Path, adult: pd.DataFrame) -> None:
    """The same table from CSV and Parquet has one digest; one changed value changes it."""
    sample = adult.head(500)
    sample.to_csv(tmp_path / "s.csv", index=False)
    sample.to_parquet(tmp_path / "s.parquet", index=False)
    from_csv, _ = data.load_table(str(tmp_path / "s.csv"), max_mb=10)
    from_parquet, _ = data.load_table(str(tmp_path / "s.parquet"), max_mb=10)
    assert data.dataset_digest(from_csv) == data.dataset_digest(from_parquet)
    changed = from_parquet.copy()
    changed.loc[7, "age"] += 1
    assert data.dataset_digest(changed) != data.dataset_digest(from_parquet)


def _codes(checks: list[data.Check], status: str) -> set[str]:
    return {c.reason_code for c in checks if c.status == status}


def test_validation_finds_hard_failures(adult: pd.DataFrame) -> None:
    """Missing target, one class, a tiny class and a column that mirrors the target are hard failures."""
    spec = DataSpec(source="x.csv", target="class")
    assert _codes(
        data.validate_frame(adult, spec.model_copy(update={"target": "salary"}), task="classification"), "fail"
    ) == {"target_missing"}
    single = adult.assign(**{"class": "<=50K"})
    assert "single_class_target" in _codes(data.validate_frame(single, spec, task="classification"), "fail")
    tiny = adult.copy()
    tiny.loc[:3, "class"] = "rare"
    assert "tiny_class" in _codes(data.validate_frame(tiny, spec, task="classification"), "fail")
    leaky = adult.assign(answer=adult["class"].map({"<=50K": "no", ">50K": "yes"}))
    assert "target_leakage" in _codes(data.validate_frame(leaky, spec, task="classification"), "fail")


def test_validation_warns_about_soft_problems(adult: pd.DataFrame) -> None:
    """ID-like, constant and empty columns and duplicate rows are reported, not fatal; Adult itself passes."""
    spec = DataSpec(source="x.csv", target="class", sensitive_features=("sex", "race"))
    checks = data.validate_frame(adult, spec, task="classification")
    assert _codes(checks, "fail") == set()
    assert _codes(checks, "warn") == {"duplicate_rows"}
    odd = adult.assign(row_id=range(len(adult)), country="US", empty=np.nan)
    warned = _codes(data.validate_frame(odd, spec, task="classification"), "warn")
    assert warned == {"id_like_column", "constant_column", "all_null_column"}


def test_presidio_scan_flags_planted_pii_and_spares_census_columns(adult: pd.DataFrame) -> None:
    """Names, e-mails and phone numbers are found; no Adult column (countries, races, jobs) is taken for PII."""
    frame = pd.concat([adult.head(2000).reset_index(drop=True), planted_pii(2000)], axis=1)
    rules = PiiRules()
    report = data.scan_frame_for_pii(frame, PresidioRedactor(), rules, seed=42, protected=("class", "sex", "race"))
    flagged = {e["column"]: e for e in report if e["action"] != "keep"}
    assert set(flagged) == {"customer_name", "contact_email", "phone"}
    assert "PERSON" in flagged["customer_name"]["entities"]
    assert "EMAIL_ADDRESS" in flagged["contact_email"]["entities"]
    assert "PHONE_NUMBER" in flagged["phone"]["entities"]
    assert all(e["action"] == "drop" for e in flagged.values())


def test_pii_columns_are_dropped_or_hashed(tmp_path: Path) -> None:
    """drop removes the column; hash keeps a keyed digest per value, equal values equal, raw values gone."""
    frame = planted_pii(50)
    report = data.scan_frame_for_pii(frame, PatternRedactor(), PiiRules(), seed=1)
    assert [e["column"] for e in report if e["action"] == "drop"] == ["contact_email"]
    assert "contact_email" not in data.apply_pii_actions(frame, report, hash_key=b"k").columns
    hashed_report = [{**e, "action": "hash"} if e["column"] == "contact_email" else e for e in report]
    key = data.pii_hash_key(tmp_path, None)
    assert (tmp_path / "keys" / "pii-hash.key").stat().st_mode & 0o077 == 0
    hashed = data.apply_pii_actions(pd.concat([frame, frame.head(1)], ignore_index=True), hashed_report, hash_key=key)
    assert not hashed["contact_email"].str.contains("@").any()
    assert hashed["contact_email"].iloc[0] == hashed["contact_email"].iloc[-1]


def test_pii_in_a_protected_column_is_refused() -> None:
    """PII in the target or a sensitive feature cannot be dropped silently: the scan says refuse."""
    report = data.scan_frame_for_pii(
        planted_pii(50), PatternRedactor(), PiiRules(), seed=1, protected=("contact_email",)
    )
    assert {e["column"]: e["action"] for e in report}["contact_email"] == "refuse"


def test_split_is_seeded_and_stratified(adult: pd.DataFrame) -> None:
    """The same seed gives the same rows; each split keeps the class balance."""
    split = SplitSpec(validation=0.15, test=0.15)
    first = data.split_frame(adult, target="class", split=split, seed=7, stratify=True)
    again = data.split_frame(adult, target="class", split=split, seed=7, stratify=True)
    other = data.split_frame(adult, target="class", split=split, seed=8, stratify=True)
    assert data.dataset_digest(first["test"]) == data.dataset_digest(again["test"])
    assert data.dataset_digest(first["test"]) != data.dataset_digest(other["test"])
    overall = (adult["class"] == ">50K").mean()
    for part in first.values():
        assert abs((part["class"] == ">50K").mean() - overall) < 0.005
    assert sum(len(p) for p in first.values()) == len(adult)


def test_reference_profile_describes_each_column(adult: pd.DataFrame) -> None:
    """Numbers get decile edges whose shares sum to one; categories get shares; labels pass the redactor."""
    frame = adult.head(1000).assign(note=["mail me at a.b@example.com"] * 1000)
    profile = data.profile_frame(frame, PatternRedactor())
    age = profile["columns"]["age"]
    assert age["kind"] == "numeric" and abs(sum(age["bin_shares"]) - 1) < 1e-6
    assert profile["columns"]["sex"]["kind"] == "categorical"
    assert set(profile["columns"]["note"]["shares"]) == {"mail me at <EMAIL_ADDRESS>"}


def test_each_data_check_runs_alone_on_the_subject() -> None:
    """Every check of the table takes the data under test and answers with its own findings."""
    from mlops_supervisor.tools.data._checks import DataUnderTest, check_row_count, check_target_type

    frame = pd.DataFrame({"x": range(30), "y": ["a", "b"] * 15})
    subject = DataUnderTest(frame, DataSpec(source="x.csv", target="y", checks={"min_rows": 50}), "regression")
    (rows,) = check_row_count(subject)
    assert (rows.check, rows.status, rows.reason_code, rows.detail) == (
        "row_count",
        "fail",
        "too_few_rows",
        "30 rows; at least 50 needed",
    )
    assert [c.reason_code for c in check_target_type(subject)] == ["target_not_numeric"]
    assert {c.__name__ for c in data.CHECKS} >= {"check_row_count", "check_target_type", "check_duplicates"}


def test_an_excluded_column_gets_no_further_column_checks() -> None:
    """An empty column is reported once (all_null), not also for missing values; a missing target stops everything."""
    frame = pd.DataFrame({"empty": [None] * 40, "x": range(40), "y": ["a", "b"] * 20})
    checks = data.validate_frame(frame, DataSpec(source="x.csv", target="y"), task="classification")
    assert [(c.check, c.reason_code) for c in checks if c.column == "empty"] == [("all_null", "all_null_column")]
    only = data.validate_frame(frame, DataSpec(source="x.csv", target="nope"), task="classification")
    assert [c.reason_code for c in only] == ["target_missing"]
