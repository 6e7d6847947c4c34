"""Human output: rich tables for reports."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def print_report(console: Console, data: dict[str, Any]) -> None:
    head = Table(title=data["site"], caption=f"{data['from']} .. {data['to']} (UTC days)", show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    avg = data["avg_session_seconds"]
    for label, value in (
        ("page views", f"{data['pageviews']:,}"),
        ("visitors", f"{data['visitors']:,}"),
        ("sessions", f"{data['sessions']:,}"),
        ("bounce rate", _pct(data["bounce_rate"])),
        ("avg session", "-" if avg is None else f"{avg:.1f} s"),
        ("revenue", data["revenue"]),
        *((f"events: {k}", f"{v:,}") for k, v in data["events"].items()),
    ):
        head.add_row(label, value)
    console.print(head)

    paths = Table(title="top paths")
    for col in ("path", "views", "visitors"):
        paths.add_column(col, justify="left" if col == "path" else "right")
    for p in data["top_paths"]:
        paths.add_row(p["path"], f"{p['views']:,}", f"{p['visitors']:,}")
    console.print(paths)

    if data["conversions"]:
        conv = Table(title="conversions")
        for col in ("name", "count", "revenue"):
            conv.add_column(col, justify="left" if col == "name" else "right")
        for c in data["conversions"]:
            conv.add_row(c["name"], f"{c['count']:,}", c["revenue"])
        console.print(conv)

    if data["api"]:
        api = Table(title="API routes")
        for col in ("method", "route", "count", "errors", "p50 ms", "p95 ms", "p99 ms"):
            api.add_column(col, justify="left" if col in ("method", "route") else "right")
        for a in data["api"]:
            api.add_row(
                a["method"],
                a["route"],
                f"{a['count']:,}",
                f"{a['errors']:,}",
                *(f"{a[k]:.1f}" if a[k] is not None else "-" for k in ("p50_ms", "p95_ms", "p99_ms")),
            )
        console.print(api)
