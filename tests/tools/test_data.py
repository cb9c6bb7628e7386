"""Data handling: loading within limits, digests, validation checks, the PII scan, splits and profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.pii import PresidioRedactor
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.policies.redaction import Finding, PatternRedactor
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
    found = {column: {e["entity"] for e in entry["entities"]} for column, entry in flagged.items()}
    assert "PERSON" in found["customer_name"]
    assert "EMAIL_ADDRESS" in found["contact_email"]
    assert "PHONE_NUMBER" in found["phone"]
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


# --- cells: rare PII and secrets in the text columns that are kept ---------------------------------

RARE = {
    3: "wants a call back, key sk-proj-RAREcellRAREcellRAREcell0042",
    7: "cc ops.lead.rare@example.org on the next renewal",
}


def _notes(rows: int) -> pd.DataFrame:
    """A free-text column that is clean but for two rows, and a categorical one with a secret in one row."""
    notes = [f"renewal note {i % 40}" for i in range(rows)]
    for row, text in RARE.items():
        notes[row] = text
    plan = ["basic", "plus", "pro"] * (rows // 3) + ["basic"] * (rows % 3)
    plan[11] = "sk-proj-PLANcellPLANcellPLANcell0042"
    return pd.DataFrame({"note": notes, "plan": pd.Categorical(plan), "seats": range(rows)})


def test_rare_pii_in_a_kept_text_column_is_redacted_cell_by_cell() -> None:
    """A column the sampled verdict keeps still has each PII or secret cell redacted (a categorical one too); counts by entity, no values."""
    frame = data.normalize_frame(_notes(600))
    report = data.scan_frame_for_pii(frame, PatternRedactor(), PiiRules(), seed=1)
    assert {e["column"]: e["action"] for e in report} == {"note": "keep", "plan": "keep", "seats": "keep"}
    assert data.text_columns(frame) == ["note", "plan"]
    cells = data.redact_text_cells(frame, PatternRedactor(), ["note", "plan"])
    assert {c: r.as_record() for c, r in cells.items()} == {
        "note": {
            "cells_redacted": 2,
            "cell_entities": [{"entity": "API_KEY", "cells": 1}, {"entity": "EMAIL_ADDRESS", "cells": 1}],
        },
        "plan": {"cells_redacted": 1, "cell_entities": [{"entity": "API_KEY", "cells": 1}]},
    }
    assert "RAREcell" not in repr(cells) and "@example.org" not in str(cells["note"].as_record())
    clean = data.apply_cell_redactions(frame, cells)
    assert clean.loc[3, "note"] == "wants a call back, key <API_KEY>"
    assert clean.loc[7, "note"] == "cc <EMAIL_ADDRESS> on the next renewal"
    assert clean.loc[11, "plan"] == "<API_KEY>"
    unchanged = [i for i in range(600) if i not in {3, 7, 11}]
    assert clean.loc[unchanged].equals(frame.loc[unchanged])
    assert clean["seats"].equals(frame["seats"])


def test_each_distinct_value_is_read_once_and_large_columns_show_progress() -> None:
    """A value repeated in many rows passes the detector once; over 2,000 distinct values a progress task advances."""
    from collections.abc import Callable, Iterator
    from contextlib import contextmanager

    class Counting(PatternRedactor):
        def __init__(self) -> None:
            self.read: list[str] = []

        def findings(self, text: str) -> list[Finding]:
            self.read.append(text)
            return super().findings(text)

    opened: list[tuple[str, int]] = []
    steps: list[str] = []

    @contextmanager
    def progress(description: str, total: int) -> Iterator[Callable[[str], None]]:
        opened.append((description, total))
        yield steps.append

    repeated = pd.DataFrame({"note": ["same words"] * 5000})
    counting = Counting()
    data.redact_text_cells(repeated, counting, ["note"], progress=progress)
    assert counting.read == ["same words"] and opened == []

    distinct = pd.DataFrame({"note": [f"note {i}" for i in range(2500)]})
    data.redact_text_cells(distinct, Counting(), ["note"], progress=progress)
    assert opened == [("redacting the text cells of 1 columns", 5)]
    assert steps == ["note"] * 5


def test_the_data_stage_stores_no_rare_pii_and_reports_cell_counts(tmp_path: Path, workspace: Path) -> None:
    """scan_pii reports redacted cells per column; the versioned data, its record, the splits and the profile hold no planted value."""
    from mlops_supervisor import Supervisor
    from tests.test_pipeline import _adult_slice, small_spec

    frame = pd.concat([_adult_slice(1200), _notes(1200)[["note"]]], axis=1)
    spec = str(small_spec(tmp_path, frame))
    with Supervisor(workspace) as sup:
        scan = sup.call("scan_pii", spec=spec)
        versioned = sup.call("version_dataset", spec=spec)
        sup.call("split_dataset", spec=spec)
    assert scan["pii_columns"] == []
    assert scan["redacted_cells"]["note"] == {
        "cells_redacted": 2,
        "cell_entities": [{"entity": "API_KEY", "cells": 1}, {"entity": "EMAIL_ADDRESS", "cells": 1}],
    }
    assert versioned["redacted_cells"] == {"note": 2}
    home = workspace / "datasets" / versioned["digest"]
    (note,) = [e for e in json.loads((home / "dataset.json").read_text("utf-8"))["pii"] if e["column"] == "note"]
    assert note["cells_redacted"] == 2
    stored = [pd.read_parquet(p).to_csv() for p in home.rglob("*.parquet")]
    stored += [p.read_text("utf-8") for p in home.rglob("*.json")]
    assert len(stored) == 7  # data, train, validation, test; dataset.json, split.json, reference_profile.json
    for text in stored:
        assert "RAREcell" not in text and "ops.lead.rare@example.org" not in text
    assert any("<API_KEY>" in text for text in stored)
