"""What a benchmark returns (``Figure``) and how a run is reported: a table and ``results.json``.

A figure may name a baseline measured in the same run. Its ``ratio`` always reads "how many times
worse than the baseline": for throughput (higher is better) it is baseline / value, for a duration
(lower is better) value / baseline. So ``ratio <= 3`` means "at most 3x slower" either way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Figure", "format_table", "to_json", "write_results"]


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    goal: str | None = None  # a human reading of the target, e.g. "ratio <= 10"
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """How many times worse than the baseline; ``None`` without a baseline or when undefined."""
        if self.baseline_value is None:
            return None
        num, den = (self.baseline_value, self.value) if self.higher_is_better else (self.value, self.baseline_value)
        return num / den if den else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline_name": self.baseline_name,
            "baseline_value": self.baseline_value,
            "ratio": self.ratio,
            "goal": self.goal,
        }


def to_json(figures: Sequence[Figure]) -> str:
    return json.dumps([f.to_json() for f in figures], indent=2, allow_nan=False) + "\n"


def write_results(path: Path, figures: Sequence[Figure]) -> None:
    path.write_text(to_json(figures), encoding="utf-8")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


_HEADER = ("name", "value", "unit", "baseline", "baseline value", "ratio", "goal")
_RIGHT = {1, 4, 5}  # numeric columns


def format_table(figures: Sequence[Figure]) -> str:
    rows = [_HEADER] + [
        (
            f.name,
            _num(f.value),
            f.unit,
            f.baseline_name or "-",
            _num(f.baseline_value),
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            f.goal or "-",
        )
        for f in figures
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]

    def line(row: Sequence[str]) -> str:
        cells = (c.rjust(w) if i in _RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(rows[0]), rule, *(line(r) for r in rows[1:])])
