"""Drift per feature on the real Adult columns: the fast KS matches scipy's, and verdicts follow the shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mlops_supervisor.tools.monitoring._drift import _ks, drift_table
from tests.conftest import ADULT


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return pd.read_parquet(ADULT).drop(columns=["class"])


@pytest.mark.parametrize("shift", [0.0, 0.5, 3.0])
def test_ks_on_sorted_samples_matches_scipy(adult: pd.DataFrame, shift: float) -> None:
    """Statistic and asymptotic p-value equal ``scipy.stats.ks_2samp`` on ages with many ties."""
    ref = adult["age"].to_numpy(float)
    cur = adult["age"].sample(2_000, random_state=1).to_numpy(float) + shift
    expected = stats.ks_2samp(ref, cur, method="asymp")
    statistic, p_value = _ks(np.sort(ref), np.sort(cur))
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_only_the_shifted_column_drifts_and_small_windows_are_not_judged(adult: pd.DataFrame) -> None:
    """Ages 8 years older: age drifts, nothing else; an unshifted sample: nothing; 50 rows: not judged."""
    reference = adult.sample(20_000, random_state=0)
    current = adult.sample(4_000, random_state=1).assign(age=lambda d: d["age"] + 8)
    table = drift_table(reference, current)
    assert [c for c, r in table.items() if r["drifted"]] == ["age"]
    assert table["age"]["psi"] > 0.2 and table["age"]["p_value"] < 1e-10
    assert table["workclass"]["kind"] == "categorical" and table["age"]["kind"] == "numeric"
    control = drift_table(reference, adult.sample(4_000, random_state=2))
    assert not any(r["drifted"] for r in control.values())
    small = drift_table(reference, current.head(50))
    assert not any(r["judged"] for r in small.values())


def test_a_category_unseen_in_training_is_named(adult: pd.DataFrame) -> None:
    """A new workclass in live traffic shows in ``new_categories`` and drives the chi-square test."""
    current = adult.sample(2_000, random_state=3).astype({"workclass": "str"})  # a category dtype in the file
    current.loc[current.index[:600], "workclass"] = "Space-agency"
    result = drift_table(adult, current)["workclass"]
    assert result["new_categories"] == ["Space-agency"] and result["drifted"]
