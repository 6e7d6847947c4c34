"""Machine output of the report views: JSON as the views return it, CSV with stable columns.

The CSV of each view is one flat table (documented in docs/reports.md); a
missing value (``null`` in JSON) is an empty field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any, Final

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "overview": ("metric", "value", "previous", "change", "change_rel", "exact"),
    "pages": ("path", "views", "visitors", "share"),
    "sources": ("dimension", "value", "views", "visitors"),
    "devices": ("dimension", "value", "views", "visitors"),
    "api": ("method", "route", "count", "errors", "error_rate", "avg_ms", "p50_ms", "p95_ms", "p99_ms"),
    "conversions": ("name", "currency", "count", "revenue"),
    "realtime": ("path", "views_this_hour", "views_previous_hour"),
    "heatmap": ("cell_x", "cell_y", "clicks"),
    "bots": ("bot", "events"),
    "events": ("name", "key", "value", "events"),
}


def rows(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The CSV rows of a view's data, as dicts keyed by :data:`COLUMNS`."""
    view = data["view"]
    if view == "overview":
        for name, m in data["metrics"].items():
            yield {"metric": name, **m}
    elif view == "pages":
        yield from data["paths"]
    elif view in ("sources", "devices"):
        for name, values in data["dimensions"].items():
            for v in values:
                yield {"dimension": name, **v}
    elif view == "api":
        yield from data["routes"]
    elif view == "conversions":
        yield from data["conversions"]
    elif view == "realtime":
        yield from data["paths"]
    elif view == "bots":
        yield from data["bots"]
    elif view == "events" and data["name"] is None:
        yield from data["events"]
    elif view == "events":
        for key, values in data["properties"].items():
            for v in values:
                yield {"name": data["name"], "key": key, **v}
    elif view == "heatmap":
        for y, line in enumerate(data["grid"]):
            for x, clicks in enumerate(line):
                yield {"cell_x": x, "cell_y": y, "clicks": clicks}
    else:
        raise ValueError(f"no CSV form for view {view!r}")


def _field(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_csv(out: IO[str], data: dict[str, Any]) -> None:
    columns = COLUMNS[data["view"]]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows(data):
        writer.writerow([_field(row.get(c)) for c in columns])


def write_json(out: IO[str], data: dict[str, Any]) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
