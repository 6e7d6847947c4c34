"""`streamproc report api | conversions | realtime | heatmap` (on `report_app`, see :mod:`streamproc.cli.report`)."""

from __future__ import annotations

from typing import Annotated

import typer

from streamproc.cli.report_options import (
    EPILOG,
    ByOpt,
    limit_opt,
    report_app,
    report_view,
    view,
)
from streamproc.reports import render


@report_app.command("api", epilog=EPILOG)
@report_view()
def api(
    ctx: typer.Context,
    by: ByOpt = None,
) -> None:
    """API routes: requests, 5xx errors and error rate (exact), mean and p50/p95/p99 latency (quantiles
    within 2 %), busiest first; `--png` draws requests and p95 per hour or day.

    Example: `streamproc report api --site shop.example --last 24h --png api.png`
    """
    from streamproc.reports.events import api as build

    view(ctx, lambda conn, a: build(conn, a.site, a.window, a.unit), render.print_api)


@report_app.command("conversions", epilog=EPILOG)
@report_view()
def conversions(
    ctx: typer.Context,
    by: ByOpt = None,
) -> None:
    """Conversions per name and currency with exact revenue (decimal strings), and conversions per hour or day.

    Example: `streamproc report conversions --site shop.example --last 30d --tz America/New_York --csv`
    """
    from streamproc.reports.events import conversions as build

    view(ctx, lambda conn, a: build(conn, a.site, a.window, a.unit), render.print_conversions)


@report_app.command("realtime", epilog=EPILOG)
@report_view(window=False)
def realtime(
    ctx: typer.Context,
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=60, help="Activity window in minutes.")] = 5,
    limit: Annotated[int, limit_opt("paths")] = 20,
) -> None:
    """What is happening now, as far as the rollups know: sessions whose last event is in the last
    `--minutes` (only events that carry a session id), and page views per path in the current UTC hour
    next to the hour before. No per-minute visitor or path data is stored, so "active visitors by path"
    is not available; see docs/reports.md.

    Example: `streamproc report realtime --site shop.example`
    """
    from streamproc.reports.views import realtime as build

    view(ctx, lambda conn, a: build(conn, a.site, a.now, minutes, limit), render.print_realtime)


@report_app.command("heatmap", epilog=EPILOG)
@report_view()
def heatmap(
    ctx: typer.Context,
    path: Annotated[str, typer.Option("--path", help="The page path, exactly as producers send it.")],
    limit: Annotated[int, limit_opt("selectors")] = 10,
) -> None:
    """Where people click on one page: the 20 × 20 click grid drawn with ░▒▓█ (quarters of the busiest
    cell), and the most clicked selectors. Clicks are per UTC day (≈ for other zones).

    Examples:

        streamproc report heatmap --site shop.example --path / --last 7d

        streamproc report heatmap --site shop.example --path /pricing --png pricing.png --size 800x800
    """
    from streamproc.reports.events import heatmap as build

    view(ctx, lambda conn, a: build(conn, a.site, a.window, path, limit), render.print_heatmap)


@report_app.command("events", epilog=EPILOG)
@report_view(chart=False)
def events(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option("--name", help="A custom event's name: break it down by property.", show_default=False),
    ] = None,
    limit: Annotated[int, limit_opt("names, and values per property")] = 20,
) -> None:
    """Custom events per name (exact), and with `--name` that event's properties: per key, the most
    frequent values and how many events carried each (per UTC day sets: exact for UTC days).

    Example: `streamproc report events --site shop.example --name video_play --last 7d`
    """
    from streamproc.reports.custom import custom_events, print_events

    view(ctx, lambda conn, a: custom_events(conn, a.site, a.window, name, limit), print_events)
