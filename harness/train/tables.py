"""Results tables as CSV (every column, raw values) + Markdown (formatted cells): a sweep's (sweep.py), a learning
curve's (curve.py) and the structure study's (study.py)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Sequence


def fmt(v: Any) -> str:
    """A Markdown cell: '-' for a missing value, 4 significant digits for a float."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def interval_text(value: Any, low: float | None, high: float | None) -> str:
    """'3.1 [2.9, 3.3]': a value and its interval (the value alone when there is none)."""
    return fmt(value) + (f" [{low:.4g}, {high:.4g}]" if low is not None and high is not None else "")


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]], align: str = "---") -> list[str]:
    """The lines of a Markdown table of already formatted cells (align "---:": right-aligned columns)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + f"{align}|" * len(columns)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]
