"""The observability plots, for people who would rather look than read: latency per version and drift."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["drift_plot", "latency_plot"]


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
    return path


def drift_plot(reports: Path, model: str, table: dict[str, Any], threshold: float) -> Path | None:
    """PSI per judged feature against the limit, drifted ones in red, as a PNG under ``reports``."""
    judged = {c: r["psi"] for c, r in table.items() if r.get("judged")}
    if not judged:
        return None
    path = reports / f"drift-{int(time.time())}.png"
    with _png(path, (8, 4)) as ax:
        names = list(judged)
        colors = ["tab:red" if table[n]["drifted"] else "tab:blue" for n in names]
        ax.bar(names, [judged[n] for n in names], color=colors)
        ax.axhline(threshold, color="black", linestyle="--", label=f"PSI limit {threshold}")
        ax.set(ylabel="PSI", title=f"{model}: drift of live requests against training data")
        ax.tick_params(axis="x", rotation=60)
        ax.legend()
    return path


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
