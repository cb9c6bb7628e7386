"""Measurements both sides of a benchmark take the same way (standard library only: Evidently's
side runs in its own venv and imports this too)."""

from __future__ import annotations

__all__ = ["rss_mib"]


def rss_mib() -> float:
    """Resident set size of this process now, in MiB (NaN where /proc is absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
