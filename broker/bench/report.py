"""What a run reports: figures (a value, optionally against a baseline measured in the same run),
the table printed at the end, the JSON written with `--json`, and progress lines on stderr."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value if math.isfinite(self.value) else None,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "note": self.note,
        }


def fig(name: str, value: float, unit: str, baseline: float | None = None, note: str = "") -> Figure:
    ratio = value / baseline if baseline else None
    return Figure(name, value, unit, baseline, ratio, note)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def render(figures: Sequence[Figure]) -> str:
    rows = [("figure", "value", "unit", "baseline", "ratio", "note")]
    for f in figures:
        rows.append(
            (
                f.name,
                f"{f.value:,.1f}" if f.value < 1000 else f"{f.value:,.0f}",
                f.unit,
                ""
                if f.baseline is None
                else (f"{f.baseline:,.1f}" if f.baseline < 1000 else f"{f.baseline:,.0f}"),
                "" if f.ratio is None else f"{f.ratio:.2f}",
                f.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    out = []
    for j, r in enumerate(rows):
        cells = (
            [r[0].ljust(widths[0])]
            + [r[i].rjust(widths[i]) for i in (1,)]
            + [r[2].ljust(widths[2]), r[3].rjust(widths[3]), r[4].rjust(widths[4]), r[5]]
        )
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def to_json(figures: Sequence[Figure]) -> str:
    """The `--json` file: a list of `Figure.to_json()` objects."""
    return json.dumps([f.to_json() for f in figures], indent=2) + "\n"
