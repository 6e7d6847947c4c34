"""``--png FILE``: the report views drawn with matplotlib (Agg, no display needed).

Images are exactly the requested size in pixels (figure size = pixels / DPI,
no tight bounding box). matplotlib is imported only when a chart is asked for.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from streamproc.errors import StreamprocError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI: Final = 100
DEFAULT_SIZE: Final = (1200, 600)
MIN_PX: Final = 320
MAX_PX: Final = 6000
BAR_COLOR: Final = "#4c72b0"
LINE_COLOR: Final = "#dd8452"
_SIZE: Final = re.compile(r"^\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*$")


class ChartError(StreamprocError):
    """A chart could not be drawn or written."""


def parse_size(value: str) -> tuple[int, int]:
    m = _SIZE.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not a size like 1200x600")
    w, h = int(m.group(1)), int(m.group(2))
    if not (MIN_PX <= w <= MAX_PX and MIN_PX <= h <= MAX_PX):
        raise ValueError(f"{value!r}: width and height between {MIN_PX} and {MAX_PX} pixels")
    return w, h


def _figure(size: tuple[int, int]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartError("--png needs matplotlib: pip install matplotlib") from None
    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> None:
    try:
        fig.savefig(path, format="png", dpi=DPI)
    except OSError as exc:
        raise ChartError(f"cannot write {path}: {exc.strerror or exc}") from None


def _ticks(ax: Axes, labels: Sequence[str], most: int = 16) -> None:
    step = max(1, -(-len(labels) // most))
    positions = list(range(0, len(labels), step))
    ax.set_xticks(positions, [labels[i] for i in positions], rotation=35, ha="right", fontsize=8)


def series_png(
    path: Path,
    size: tuple[int, int],
    title: str,
    labels: Sequence[str],
    bars: tuple[str, Sequence[float]],
    line: tuple[str, Sequence[float | None]] | None = None,
) -> None:
    """Bars for the main measure per bucket, and optionally a line on a second axis."""
    fig = _figure(size)
    ax = fig.add_subplot()
    x = list(range(len(labels)))
    ax.bar(x, list(bars[1]), color=BAR_COLOR, label=bars[0])
    ax.set_ylabel(bars[0], color=BAR_COLOR)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    _ticks(ax, labels)
    if line is not None and any(v is not None for v in line[1]):
        twin = ax.twinx()
        twin.plot(x, [float("nan") if v is None else v for v in line[1]], color=LINE_COLOR, marker="o", ms=3)
        twin.set_ylabel(line[0], color=LINE_COLOR)
        twin.set_ylim(bottom=0)
    _save(fig, path)


def bars_png(
    path: Path, size: tuple[int, int], title: str, panels: Sequence[tuple[str, list[str], list[float]]]
) -> None:
    """Horizontal bar charts side by side, one per (title, labels, values) panel, biggest on top."""
    fig = _figure(size)
    fig.suptitle(title)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (name, labels, values) in zip(axes, panels, strict=False):
        shown = [label if len(label) <= 28 else label[:27] + "…" for label in labels]
        ax.barh(list(range(len(values))), values, color=BAR_COLOR)
        ax.set_yticks(list(range(len(values))), shown, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(name)
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def heatmap_png(path: Path, size: tuple[int, int], title: str, grid: Sequence[Sequence[int]]) -> None:
    """The click grid as an image: x to the right, y down, like the page."""
    fig = _figure(size)
    ax = fig.add_subplot()
    image = ax.imshow([list(r) for r in grid], cmap="inferno", interpolation="nearest", extent=(0, 1, 1, 0))
    ax.set_title(title)
    ax.set_xlabel("x (page width)")
    ax.set_ylabel("y (page height)")
    from matplotlib.ticker import MaxNLocator

    fig.colorbar(image, ax=ax, label="clicks", ticks=MaxNLocator(integer=True))
    _save(fig, path)


def _blank(value: str, empty: str) -> str:
    return value if value else empty


def chart(data: dict[str, Any], path: Path, size: tuple[int, int]) -> None:
    """Draw the chart that fits a view's data."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs in odd path names must not fail a report
        _chart(data, path, size)


def _chart(data: dict[str, Any], path: Path, size: tuple[int, int]) -> None:
    view, site = data["view"], data["site"]
    when = f"{data['range']['from']} .. {data['range']['to']} ({data['range']['tz']})" if "range" in data else ""
    if view in ("overview", "api", "conversions"):
        series = data["series"]
        rows = series["buckets"]
        labels = [b["label"] for b in rows]
        per = series["unit"]
        if view == "overview":
            second = "visitors" if per == "day" else "sessions started"
            key = "visitors" if per == "day" else "sessions"
            series_png(
                path,
                size,
                f"{site}: page views per {per}, {when}",
                labels,
                ("page views", [b["pageviews"] for b in rows]),
                (second, [b[key] for b in rows]),
            )
        elif view == "api":
            series_png(
                path,
                size,
                f"{site}: API requests per {per}, {when}",
                labels,
                ("requests", [b["requests"] for b in rows]),
                ("p95 ms", [b["p95_ms"] for b in rows]),
            )
        else:
            series_png(
                path,
                size,
                f"{site}: conversions per {per}, {when}",
                labels,
                ("conversions", [b["conversions"] for b in rows]),
            )
    elif view == "pages":
        panels = [("views", [p["path"] for p in data["paths"]], [p["views"] for p in data["paths"]])]
        bars_png(path, size, f"{site}: top pages, {when}", panels)
    elif view in ("sources", "devices"):
        panels = [
            (name, [_blank(v["value"], "(none)") for v in values], [v["views"] for v in values])
            for name, values in data["dimensions"].items()
        ]
        bars_png(path, size, f"{site}: {view} by page views, {when}", panels)
    elif view == "realtime":
        paths = data["paths"]
        panels = [
            ("since " + data["hour"][11:16] + " UTC", [p["path"] for p in paths], [p["views_this_hour"] for p in paths])
        ]
        bars_png(path, size, f"{site}: page views this hour", panels)
    elif view == "heatmap":
        heatmap_png(path, size, f"{site} {data['path']}: {data['clicks']:,} clicks, {when}", data["grid"])
    else:
        raise ChartError(f"no chart for view {view!r}")
