"""Update BENCHMARKS.md in place: rows of its results table keyed by how they begin, and whole sections."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_rows", "write_section"]


def write_rows(path: Path, rows: dict[str, str]) -> None:
    """Each row replaces the table row starting with its key, or is appended to the first table."""
    lines = path.read_text("utf-8").splitlines()
    for prefix, row in rows.items():
        if any(line.startswith(prefix) for line in lines):
            lines = [row if line.startswith(prefix) else line for line in lines]
        else:
            end = next(i for i, line in enumerate(lines) if line.startswith("|"))  # header, separator, rows
            while end + 1 < len(lines) and lines[end + 1].startswith("|"):
                end += 1
            lines.insert(end + 1, row)
    path.write_text("\n".join(lines).rstrip("\n") + "\n", "utf-8")


def write_section(path: Path, heading: str, text: str) -> None:
    """Replace the section under ``heading`` (up to the next ``## ``) with ``text``, or append it."""
    lines = path.read_text("utf-8").splitlines()
    if heading in lines:
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = text.splitlines() + ([""] if end < len(lines) else [])
    else:
        lines += ["", *text.splitlines()]
    path.write_text("\n".join(lines).rstrip("\n") + "\n", "utf-8")
