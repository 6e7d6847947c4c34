"""Pictures made of characters: sparklines, bars and a click heatmap. Pure: strings in, strings out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

SPARKS: Final = "▁▂▃▄▅▆▇█"
EIGHTHS: Final = " ▏▎▍▌▋▊▉█"
HEAT: Final = " ░▒▓█"  # 0 clicks, then up to 25 / 50 / 75 / 100 % of the busiest cell


def sparkline(values: Sequence[float | None], width: int | None = None) -> str:
    """One character per value (``None`` as a space), scaled to the largest; groups are summed to fit ``width``."""
    vals = list(values)
    if width is not None and width > 0 and len(vals) > width:
        step = math.ceil(len(vals) / width)
        vals = [_sum(vals[i : i + step]) for i in range(0, len(vals), step)]
    top = max((v for v in vals if v is not None), default=0) or 0
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[round(v / top * (len(SPARKS) - 1)) if top > 0 else 0])
    return "".join(out)


def _sum(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def bar(value: float, top: float, width: int = 20) -> str:
    """A horizontal bar of ``value / top`` of ``width`` cells, to an eighth of a cell."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(min(value / top, 1.0) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (EIGHTHS[part] if part else "")


def heat_level(value: int, top: int) -> int:
    """0 for no clicks, else 1..4: the quarter of the busiest cell's count it reaches."""
    if value <= 0 or top <= 0:
        return 0
    return min(len(HEAT) - 1, math.ceil(value * (len(HEAT) - 1) / top))
