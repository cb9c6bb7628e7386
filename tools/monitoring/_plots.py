"""The observability plots, for people who would rather look than read: latency per version, drift, live quality.

Each plot is a new PNG named by its kind and the second it was drawn (``drift-1764627000.png``) under
``<workspace>/reports/<model>/``; a monitor on a schedule draws them every run, so only the newest
``KEEP_PLOTS`` of each kind are kept.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "KEEP_PLOTS",
    "DriftState",
    "draw_drift",
    "drift_plot",
    "drift_states",
    "drift_styles",
    "latency_plot",
    "prune_plots",
    "quality_plot",
]

KEEP_PLOTS = 20
"""PNGs of each kind (drift, latency, quality) kept per model; older ones are deleted when a new one is drawn."""


def prune_plots(reports: Path, kind: str, keep: int = KEEP_PLOTS) -> list[Path]:
    """Delete all but the newest ``keep`` ``<kind>-<seconds>.png`` under ``reports``; the paths deleted.

    Newest is by the time in the name (the file's modification time breaks a tie); other files are left alone.
    """
    pattern = re.compile(rf"{re.escape(kind)}-(\d+)\.png")
    found: list[tuple[int, float, Path]] = []
    for path in reports.glob(f"{kind}-*.png"):
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        try:
            found.append((int(match.group(1)), path.stat().st_mtime, path))
        except FileNotFoundError:
            continue  # another monitor pruned it meanwhile
    found.sort(reverse=True)
    old = [path for _, _, path in found[keep:]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def latency_plot(reports: Path, model: str, window: dict[str, Any]) -> Path | None:
    """Cumulative latency per version from the router's histogram, as a PNG under ``reports``; None without traffic."""
    if not window:
        return None
    path = reports / f"latency-{int(time.time())}.png"
    with _png(path, (7, 4)) as ax:
        for version, w in sorted(window.items()):
            ordered = sorted((float(le), c) for le, c in w["buckets"].items() if le != "+Inf")
            total = w["buckets"].get("+Inf", 0) or 1
            ax.plot([b * 1000 for b, _ in ordered], [c / total for _, c in ordered], marker="o", label=f"v{version}")
        ax.set(xscale="log", xlabel="latency (ms)", ylabel="share of requests at or below", title=f"{model} latency")
        ax.legend()
    prune_plots(reports, "latency")
    return path


DriftState = Literal["drifted", "not_significant", "within_limit"]


class _Style(NamedTuple):
    color: str
    hatch: str
    label: str


def drift_states(table: Mapping[str, Mapping[str, Any]], threshold: float) -> dict[str, DriftState]:
    """The state of each judged feature: drifted, PSI over ``threshold`` but not significant, or within it.

    ``drifted`` is the table's own verdict (PSI over its limit *and* the test significant), so the plot
    and the alerts never disagree; a bar over the line that is not drifted failed the significance test.
    """
    return {
        column: "drifted" if row["drifted"] else "not_significant" if row["psi"] > threshold else "within_limit"
        for column, row in table.items()
        if row.get("judged")
    }


def drift_styles(threshold: float, p_value: float) -> dict[DriftState, _Style]:
    """Colour, hatch and legend label of each state, naming the PSI and p-value limits that separate them."""
    return {
        "drifted": _Style("tab:red", "", f"drifted: PSI > {threshold} and p < {p_value}"),
        "not_significant": _Style("tab:orange", "//", f"PSI > {threshold} but not significant (p ≥ {p_value})"),
        "within_limit": _Style("tab:blue", "", f"within the PSI limit (≤ {threshold})"),
    }


def drift_plot(reports: Path, model: str, table: dict[str, Any], threshold: float, p_value: float) -> Path | None:
    """PSI per judged feature against the limit, coloured by state (see ``drift_styles``), as a PNG under ``reports``."""
    states = drift_states(table, threshold)
    if not states:
        return None
    path = reports / f"drift-{int(time.time())}.png"
    with _png(path, (9, 4.5)) as ax:
        draw_drift(ax, model, table, states, threshold, p_value)
    prune_plots(reports, "drift")
    return path


def draw_drift(
    ax: Axes,
    model: str,
    table: Mapping[str, Mapping[str, Any]],
    states: Mapping[str, DriftState],
    threshold: float,
    p_value: float,
) -> None:
    """The drift bars, the PSI line, each over-limit bar's p-value and a legend entry per state, on ``ax``."""
    from matplotlib.patches import Patch

    styles = drift_styles(threshold, p_value)
    names = list(states)
    heights = [table[n]["psi"] for n in names]
    ax.bar(
        names,
        heights,
        color=[styles[states[n]].color for n in names],
        hatch=[styles[states[n]].hatch for n in names],
        edgecolor="white",
    )
    for i, name in enumerate(names):
        if states[name] != "within_limit":  # the p-value is what tells the two kinds of tall bar apart
            ax.annotate(f"p={table[name]['p_value']:.2g}", (i, heights[i]), ha="center", va="bottom", fontsize=8)
    line = ax.axhline(threshold, color="black", linestyle="--", label=f"PSI limit {threshold}")
    handles = [Patch(facecolor=s.color, hatch=s.hatch, edgecolor="white", label=s.label) for s in styles.values()]
    ax.set(ylabel="PSI", title=f"{model}: drift of live requests against training data")
    ax.margins(y=0.12)  # room for the p-value over the tallest bar
    ax.tick_params(axis="x", rotation=60)
    ax.legend(handles=[*handles, line], fontsize=8)


def quality_plot(reports: Path, model: str, versions: Mapping[str, Mapping[str, Any]]) -> Path | None:
    """Live metrics beside the evaluation's per judged version, and the per-group selection rate and
    accuracy of the version with the most labels, as a PNG under ``reports``; None when nothing was judged."""
    judged = {v: r for v, r in versions.items() if r.get("judged")}
    if not judged:
        return None
    path = reports / f"quality-{int(time.time())}.png"
    busiest = max(judged, key=lambda v: judged[v]["labelled"])
    fair = {f: r for f, r in judged[busiest].get("fairness", {}).items() if r.get("judged")}
    with _png(path, (12 if fair else 7, 4.5)) as ax:
        if fair:  # a second panel for the groups
            figure = ax.figure
            ax.remove()
            ax, groups_ax = figure.subplots(1, 2)
            _draw_groups(groups_ax, busiest, fair)
        _draw_metrics(ax, model, judged)
    prune_plots(reports, "quality")
    return path


def _draw_metrics(ax: Axes, model: str, judged: Mapping[str, Mapping[str, Any]]) -> None:
    """Each version's live metrics as bars (red: decayed past the tolerance), its evaluation's as black ticks."""
    names = sorted({n for r in judged.values() for n, m in r["metrics"].items() if m["live"] is not None})
    width = 0.8 / len(judged)
    for i, (version, result) in enumerate(sorted(judged.items())):
        rows = result["metrics"]
        xs = [k + (i - (len(judged) - 1) / 2) * width for k in range(len(names))]
        live = [rows.get(n, {}).get("live") or 0.0 for n in names]
        colors = ["tab:red" if rows.get(n, {}).get("over") else f"C{i}" for n in names]
        ax.bar(xs, live, width=width, color=colors, label=f"v{version} live ({result['labelled']} labelled)")
        base = [
            (x, rows[n]["evaluation"]) for x, n in zip(xs, names, strict=True) if n in rows and rows[n]["evaluation"]
        ]
        if base:
            ax.scatter([x for x, _ in base], [y for _, y in base], marker="_", s=300, color="black", zorder=3)
    ax.scatter([], [], marker="_", s=300, color="black", label="at evaluation")
    ax.bar([], [], color="tab:red", label="decayed past the tolerance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set(title=f"{model}: live quality on labelled predictions")
    ax.legend(fontsize=8)


def _draw_groups(ax: Axes, version: str, fairness: Mapping[str, Mapping[str, Any]]) -> None:
    """Selection rate and accuracy of every group of every sensitive feature, the differences in the labels."""
    labels, selection, accuracy = [], [], []
    for feature, result in fairness.items():
        for row in result["by_group"]:
            labels.append(f"{feature}={row['group']} ({row['count']:.0f})")
            selection.append(row["selection_rate"])
            accuracy.append(row["accuracy"])
    xs = list(range(len(labels)))
    ax.bar([x - 0.2 for x in xs], selection, width=0.4, label="selection rate")
    ax.bar([x + 0.2 for x in xs], accuracy, width=0.4, label="accuracy")
    ax.set_xticks(xs, labels, rotation=45, ha="right", fontsize=7)
    checks = "; ".join(
        f"{f} {n.split('_difference')[0].replace('_', ' ')} {c['value']:.3f}" + (" (over)" if not c["passed"] else "")
        for f, r in fairness.items()
        for n, c in r["checks"].items()
    )
    ax.set_title(f"v{version} by group: {checks}", fontsize=8, wrap=True)
    ax.legend(fontsize=8)


@contextmanager
def _png(path: Path, size: tuple[float, float]) -> Iterator[Any]:
    """One set of axes to draw on, saved to ``path`` as a PNG when the block ends; always closed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=size)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
