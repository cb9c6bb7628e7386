"""The drift plot tells drifted, over-the-line-but-not-significant and within-the-limit bars apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from mlops_supervisor.tools.monitoring._plots import draw_drift, drift_plot, drift_states

# PSI limit 0.2, p-value limit 0.01: ``drifted`` as drift_table sets it (PSI over the limit and p below)
TABLE: dict[str, dict[str, Any]] = {
    "age": {"judged": True, "psi": 1.0, "p_value": 1e-6, "drifted": True},
    "occupation": {"judged": True, "psi": 0.3, "p_value": 0.4, "drifted": False},
    "sex": {"judged": True, "psi": 0.05, "p_value": 0.001, "drifted": False},
    "race": {"judged": False, "drifted": False, "why": "12 live values; at least 100 needed"},
}


def test_each_judged_feature_gets_its_state() -> None:
    """A tall bar that failed the test is told apart from a drifted one; unjudged features are left out."""
    assert drift_states(TABLE, 0.2) == {"age": "drifted", "occupation": "not_significant", "sex": "within_limit"}


def test_the_three_states_have_three_colours_and_legend_labels_naming_both_limits() -> None:
    """Bars read back from the axes carry one colour per state, and the legend names each state and the limits."""
    ax = Figure().subplots()
    draw_drift(ax, "m", TABLE, drift_states(TABLE, 0.2), 0.2, 0.01)
    colours = {
        label.get_text(): to_hex(bar.get_facecolor())
        for label, bar in zip(ax.get_xticklabels(), ax.patches, strict=True)
    }
    assert len(set(colours.values())) == 3
    assert ax.patches[1].get_hatch() == "//" and not ax.patches[0].get_hatch()
    legend = ax.get_legend()
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels == [
        "drifted: PSI > 0.2 and p < 0.01",
        "PSI > 0.2 but not significant (p ≥ 0.01)",
        "within the PSI limit (≤ 0.2)",
        "PSI limit 0.2",
    ]
    swatches = [to_hex(handle.get_facecolor()) for handle in legend.legend_handles[:3]]
    assert swatches == [colours["age"], colours["occupation"], colours["sex"]]
    assert [t.get_text() for t in ax.texts] == ["p=1e-06", "p=0.4"]  # the p-value over each bar past the line


def test_drift_plot_writes_a_png_only_when_something_was_judged(tmp_path: Path) -> None:
    """A PNG with a judged feature; None when every window was too small to judge."""
    path = drift_plot(tmp_path, "m", TABLE, 0.2, 0.01)
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
    assert drift_plot(tmp_path / "none", "m", {"race": TABLE["race"]}, 0.2, 0.01) is None
