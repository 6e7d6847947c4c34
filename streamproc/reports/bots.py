"""`report bots`: what bot filtering kept out of the traffic figures (``bots_daily``)."""

from __future__ import annotations

from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streamproc.reports.textplot import bar
from streamproc.reports.timerange import Window

Conn = psycopg.Connection[Any]


def bots(conn: Conn, site: str, w: Window, limit: int) -> dict[str, Any]:
    """Page views and clicks per bot name over the window's days (kept per UTC day: exact for
    UTC days, the days of the window otherwise), busiest first; ``total`` over all bots."""
    days = w.visitor_days()
    rows = conn.execute(
        "SELECT bot, sum(events)::bigint AS n FROM bots_daily WHERE site = %s AND day = ANY(%s)"
        ' GROUP BY bot ORDER BY n DESC, bot COLLATE "C"',
        (site, days),
    ).fetchall()
    return {
        "view": "bots",
        "site": site,
        "range": w.as_json(),
        "days": [d.isoformat() for d in days],
        "exact": w.utc_days_exact,
        "total": sum(int(n) for _, n in rows),
        "bots": [{"bot": b, "events": int(n)} for b, n in rows[:limit]],
    }


def print_bots(console: Console, data: dict[str, Any]) -> None:
    rng = data["range"]
    table = Table(
        title=f"{data['site']} — bots, {rng['from']} to {rng['to']}",
        caption=f"{data['total']:,} page views and clicks from bots, not counted as traffic",
    )
    table.add_column("bot", overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("", no_wrap=True)
    top = max((b["events"] for b in data["bots"]), default=0)
    for b in data["bots"]:
        table.add_row(Text(b["bot"]), f"{b['events']:,}", Text(bar(b["events"], top, 16), "cyan"))
    console.print(table)
    if not data["exact"]:
        console.print("counts are per UTC day: the window's edges are rounded to whole UTC days", style="dim")
