"""`report events`: custom events by name, and one event's properties (``event_props_daily``).

Event counts come from ``events_hourly`` (exact for any window on whole UTC hours);
property counts are kept per UTC day and read on the window's
:meth:`~streamproc.reports.timerange.Window.visitor_days`, like every per-day figure.
"""

from __future__ import annotations

from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamproc.reports.literal import literal
from streamproc.reports.textplot import bar
from streamproc.reports.timerange import Window

Conn = psycopg.Connection[Any]


def custom_events(conn: Conn, site: str, w: Window, name: str | None, limit: int) -> dict[str, Any]:
    """Custom events per name, busiest first; with ``name``, that event's properties: per key,
    the ``limit`` most frequent values with the number of events that carried each."""
    days = w.visitor_days()
    names = conn.execute(
        "SELECT name, sum(events)::bigint AS n FROM events_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s AND type = 'custom'"
        ' GROUP BY name ORDER BY n DESC, name COLLATE "C" LIMIT %s',
        (site, w.start, w.end, limit),
    ).fetchall()
    properties: dict[str, list[dict[str, Any]]] = {}
    if name is not None:
        for key, value, n in conn.execute(
            "SELECT key, value, sum(events)::bigint AS n FROM event_props_daily"
            " WHERE site = %s AND day = ANY(%s) AND name = %s"
            ' GROUP BY key, value ORDER BY key COLLATE "C", n DESC, value COLLATE "C"',
            (site, days, name),
        ).fetchall():
            values = properties.setdefault(key, [])
            if len(values) < limit:
                values.append({"value": value, "events": int(n)})
    return {
        "view": "events",
        "site": site,
        "range": w.as_json(),
        "visitor_days": [d.isoformat() for d in days],
        "exact": {"events": w.hour_exact, "properties": w.utc_days_exact},
        "name": name,
        "events": [{"name": n, "events": int(c)} for n, c in names],
        "properties": properties,
    }


@literal
def print_events(console: Console, data: dict[str, Any]) -> None:
    rng = data["range"]
    span = rng["from"] if rng["from"] == rng["to"] else f"{rng['from']} .. {rng['to']}"
    table = Table(title=f"{data['site']} — custom events, {span} ({rng['tz']})")
    table.add_column("name", overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("", no_wrap=True)
    top = max((e["events"] for e in data["events"]), default=0)
    for e in data["events"]:
        table.add_row(e["name"], f"{e['events']:,}", Text(bar(e["events"], top, 16), "cyan"))
    console.print(table)
    if data["name"] is None:
        console.print("properties of one event: --name NAME", style="dim")
        return
    if not data["properties"]:
        console.print(f"no properties recorded for {data['name']} in this range", style="dim")
    for key, values in data["properties"].items():
        props = Table(title=f"{data['name']} — {key}")
        props.add_column(key, overflow="fold")
        props.add_column("events", justify="right")
        for v in values:
            props.add_row(v["value"], f"{v['events']:,}")
        console.print(props)
    if not data["exact"]["properties"]:
        days = ", ".join(data["visitor_days"])
        console.print(f"≈ properties are kept per UTC day: counted on {days} (docs/reports.md)", style="dim")
