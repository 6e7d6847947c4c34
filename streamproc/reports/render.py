"""Human output: rich tables (and bars, sparklines, a block-character heatmap) for reports.

Every string in a report may come from a producer: every ``print_*`` view is wrapped
by :func:`streamproc.reports.literal.literal`, so it prints through a console that shows
them literally (no markup, no emoji codes, control characters escaped). JSON and CSV
output does not pass through here and stays byte-exact.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamproc.reports.literal import literal
from streamproc.reports.textplot import HEAT, bar, heat_level, sparkline


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


@literal
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
        ("avg session", duration(avg)),
        *((f"revenue {c or '(no currency)'}", v) for c, v in data["revenue_by_currency"].items()),
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
            conv.add_row(c["name"], f"{c['count']:,}", _money(c["revenue_by_currency"]))
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


def _money(by_currency: dict[str, str]) -> str:
    """``{"EUR": "100", "JPY": "5000", "": "7"}`` -> ``100 EUR, 5000 JPY, 7 (no currency)``: never one sum."""
    return ", ".join(f"{v} {c or '(no currency)'}" for c, v in by_currency.items())


# --- report views --------------------------------------------------------------------------------

DIM_LABELS = {
    "referrer": ("referrer", "(direct / none)"),
    "utm_source": ("utm_source", "(none)"),
    "utm_medium": ("utm_medium", "(none)"),
    "utm_campaign": ("utm_campaign", "(none)"),
    "device": ("device", "(unknown)"),
    "browser": ("browser", "(unknown)"),
    "os": ("os", "(unknown)"),
    "country": ("country", "(unknown)"),
}


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def duration(seconds: float | None) -> str:
    """A length of time for people: ``12.3 s``, ``4 m 05 s``, ``25 h 13 m``, ``3 d 04 h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def _change(name: str, metric: dict[str, Any]) -> Text:
    """▲/▼ with the relative change (points for the bounce rate), green when it is good news."""
    change, rel = metric["change"], metric["change_rel"]
    if change is None:
        return Text("-", style="dim")
    if change == 0:
        return Text("= 0", style="dim")
    up = change > 0
    good = not up if name == "bounce_rate" else up
    arrow = "▲" if up else "▼"
    if name == "bounce_rate":
        label = f"{arrow} {abs(change) * 100:.1f} pts"
    elif rel is None:
        label = f"{arrow} new"
    else:
        label = f"{arrow} {abs(rel) * 100:.1f} %"
    return Text(label, style="green" if good else "red")


def _value(name: str, value: Any) -> str:
    if name == "bounce_rate":
        return _pct(value)
    if name == "avg_session_seconds":
        return duration(value)
    return _n(value)


def _approx_note(data: dict[str, Any], what: str) -> str:
    days = data["visitor_days"]
    if not days:
        return f"{what}: kept per UTC day, not available for a window shorter than a day (docs/reports.md)"
    span = days[0] if len(days) == 1 else f"{days[0]} .. {days[-1]}"
    return f"≈ {what}: counted on UTC day(s) {span}, the nearest the per-UTC-day rollups allow (docs/reports.md)"


METRIC_LABELS = {
    "pageviews": "page views",
    "visitors": "visitors",
    "sessions": "sessions",
    "bounce_rate": "bounce rate",
    "avg_session_seconds": "avg session",
}


@literal
def print_overview(console: Console, data: dict[str, Any]) -> None:
    rng, prev = data["range"], data["previous_range"]
    table = Table(title=f"{data['site']} — {_range_text(rng)}", caption=f"change against {_range_text(prev)}")
    table.add_column("metric", style="bold")
    for col in ("value", "previous", "change"):
        table.add_column(col, justify="right")
    approx = []
    for name, metric in data["metrics"].items():
        label = METRIC_LABELS[name] + ("" if metric["exact"] else " ≈")
        if not metric["exact"]:
            approx.append(METRIC_LABELS[name])
        table.add_row(label, _value(name, metric["value"]), _value(name, metric["previous"]), _change(name, metric))
    console.print(table)
    _print_series(console, data["series"])
    if approx:
        console.print(_approx_note(data, " and ".join(approx)), style="dim")


def _range_text(rng: dict[str, Any]) -> str:
    if rng["unit"] == "day":
        days = rng["from"] if rng["from"] == rng["to"] else f"{rng['from']} .. {rng['to']}"
        return f"{days} ({rng['tz']})"
    zone = ZoneInfo(rng["tz"])
    start, end = (dt.datetime.fromisoformat(rng[k]).astimezone(zone) for k in ("start", "end"))
    return f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} ({rng['tz']})"


def _print_series(console: Console, series: dict[str, Any]) -> None:
    rows = series["buckets"]
    if not rows:
        return
    views = [b["pageviews"] for b in rows]
    per = "hour" if series["unit"] == "hour" else "day"
    if len(rows) > 48:
        console.print(f"page views per {per}  {sparkline(views, console.width - 25)}  max {max(views):,}")
        return
    second = "visitors" if series["unit"] == "day" else "sessions"
    heading = "visitors" if second == "visitors" else "sessions started"
    table = Table(title=f"page views per {per}", box=None, pad_edge=False)
    table.add_column(per)
    table.add_column("views", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column(heading + ("" if series["exact"][second] else " ≈"), justify="right")
    top = max(views)
    for b in rows:
        table.add_row(b["label"], f"{b['pageviews']:,}", Text(bar(b["pageviews"], top), "cyan"), _n(b[second]))
    console.print(table)


@literal
def print_pages(console: Console, data: dict[str, Any]) -> None:
    approx = "" if data["exact"]["visitors"] else " ≈"
    table = Table(title=f"{data['site']} — top pages, {_range_text(data['range'])}")
    table.add_column("#", justify="right", style="dim")
    table.add_column("path", overflow="fold")
    table.add_column("views", justify="right")
    table.add_column("visitors" + approx, justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    top = max((p["views"] for p in data["paths"]), default=0)
    for i, p in enumerate(data["paths"], 1):
        table.add_row(
            str(i),
            p["path"],
            f"{p['views']:,}",
            _n(p["visitors"]),
            _pct(p["share"]),
            Text(bar(p["views"], top, 16), "cyan"),
        )
    console.print(table)
    console.print(f"{data['pageviews']:,} page views in all", style="dim")
    if approx:
        console.print(_approx_note(data, "visitors"), style="dim")


@literal
def print_dimensions(console: Console, data: dict[str, Any]) -> None:
    for name, rows in data["dimensions"].items():
        label, empty = DIM_LABELS[name]
        table = Table(title=f"{data['site']} — {label}, {_range_text(data['range'])}")
        table.add_column(label, overflow="fold")
        table.add_column("views", justify="right")
        table.add_column("visitors", justify="right")
        table.add_column("", no_wrap=True)
        top = max((r["views"] for r in rows), default=0)
        for r in rows:
            value = r["value"] or Text(empty, style="dim")
            table.add_row(value, f"{r['views']:,}", f"{r['visitors']:,}", Text(bar(r["views"], top, 16), "cyan"))
        console.print(table)
    if not data["exact"]["views"]:
        console.print(_approx_note(data, "views and visitors"), style="dim")


@literal
def print_api(console: Console, data: dict[str, Any]) -> None:
    table = Table(
        title=f"{data['site']} — API routes, {_range_text(data['range'])}",
        caption="latency in ms; quantiles within 2 % of the true nearest-rank value",
    )
    table.add_column("method")
    table.add_column("route", overflow="fold")
    for col in ("count", "5xx", "err %", "avg", "p50", "p95", "p99"):
        table.add_column(col, justify="right", no_wrap=True)
    for a in data["routes"]:
        rate = a["error_rate"] or 0.0
        style = "red" if rate >= 0.05 else "yellow" if rate >= 0.01 else ""
        table.add_row(
            a["method"],
            a["route"],
            f"{a['count']:,}",
            f"{a['errors']:,}",
            Text(_pct(a["error_rate"]), style=style),
            *(f"{a[k]:.1f}" if a[k] is not None else "-" for k in ("avg_ms", "p50_ms", "p95_ms", "p99_ms")),
        )
    console.print(table)
    requests = [b["requests"] for b in data["series"]["buckets"]]
    if any(requests):
        console.print(f"requests per {data['series']['unit']}  {sparkline(requests, console.width - 30)}")


@literal
def print_conversions(console: Console, data: dict[str, Any]) -> None:
    table = Table(title=f"{data['site']} — conversions, {_range_text(data['range'])}")
    for col in ("name", "currency", "count", "revenue"):
        table.add_column(col, justify="left" if col in ("name", "currency") else "right")
    for c in data["conversions"]:
        table.add_row(c["name"], c["currency"] or "-", f"{c['count']:,}", c["revenue"])
    console.print(table)
    revenue = _money(data["revenue_by_currency"]) or "none"
    console.print(f"{data['total_count']:,} conversions; revenue {revenue}")
    counts = [b["conversions"] for b in data["series"]["buckets"]]
    if any(counts):
        console.print(f"conversions per {data['series']['unit']}  {sparkline(counts, console.width - 30)}")


@literal
def print_realtime(console: Console, data: dict[str, Any]) -> None:
    console.print(
        Text.assemble(
            ("● ", "green"),
            (f"{data['active_sessions']:,}", "bold"),
            f" active sessions (last event in the {data['window_minutes']} minutes to {data['now']};"
            f" {data['active_sessions_with_pageviews']:,} of them with page views)",
        )
    )
    hour = data["hour"][11:16]
    table = Table(title=f"{data['site']} — page views by path this UTC hour (since {hour})")
    table.add_column("path", overflow="fold")
    table.add_column(f"since {hour}", justify="right")
    table.add_column("previous hour", justify="right")
    for p in data["paths"]:
        table.add_row(p["path"], f"{p['views_this_hour']:,}", f"{p['views_previous_hour']:,}")
    console.print(table)
    console.print(
        f"{data['pageviews_this_hour']:,} page views this hour, {data['pageviews_previous_hour']:,} the hour before;"
        " no per-minute visitors are stored (docs/reports.md)",
        style="dim",
    )


HEAT_STYLES = ("", "grey70", "yellow", "dark_orange", "red")


@literal
def print_heatmap(console: Console, data: dict[str, Any]) -> None:
    title = f"{data['site']} {data['path']} — {data['clicks']:,} clicks, {_range_text(data['range'])}"
    if data["clicks"] == 0:
        console.print(f"no clicks on {data['path']!r} in this range ({_range_text(data['range'])})")
        if data["paths_with_clicks"]:
            console.print(
                "paths with clicks: " + ", ".join(f"{p['path']} ({p['clicks']:,})" for p in data["paths_with_clicks"])
            )
        return
    top = data["max_cell"]
    grid = Text()
    for y, row in enumerate(data["grid"]):
        if y:
            grid.append("\n")
        for v in row:
            level = heat_level(v, top)
            grid.append(HEAT[level] * 2, style=HEAT_STYLES[level])
    console.print(title, style="bold", highlight=False)
    size = data["grid_size"]
    console.print(Panel(grid, expand=False, subtitle=f"x →, y ↓, {size} × {size} cells", padding=0))
    legend = "  ".join(f"{HEAT[i]} ≤ {i * 25} %" for i in range(1, len(HEAT)))
    console.print(f"{legend} of the busiest cell ({top:,} clicks)")
    if data["selectors"]:
        table = Table(title="clicked selectors")
        table.add_column("selector", overflow="fold")
        table.add_column("clicks", justify="right")
        for s in data["selectors"]:
            table.add_row(s["selector"] or Text("(none)", style="dim"), f"{s['clicks']:,}")
        console.print(table)
    if not data["exact"]["clicks"]:
        console.print(_approx_note(data, "clicks"), style="dim")
