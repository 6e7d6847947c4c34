"""`streamproc report`: read the rollups back for people and scripts.

`report --site S --from D --to D [--json]`, with no sub-view, is the original
all-in-one report over UTC days (its JSON keys are a contract). The sub-views
(`overview`, `pages`, `sources`, `devices`, `bots`, `api`, `conversions`, `realtime`,
`heatmap`) add `--last`, `--tz`, `--csv` and `--png`; their options and output
plumbing live in :mod:`streamproc.cli.report_options`, their queries in :mod:`streamproc.reports.views` and
:mod:`streamproc.reports.events`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated

import typer

from streamproc.cli.options import ConfigOpt, DatabaseOpt, SchemaOpt, friendly, out, settings_from
from streamproc.cli.report_options import (
    EPILOG,
    EXIT_CODES,
    ByOpt,
    SiteOpt,
    limit_opt,
    report_app,
    report_view,
    view,
)
from streamproc.reports import render


def _parse_day(value: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-01-31", param_hint=flag) from None


@report_app.callback(invoke_without_command=True, epilog=EXIT_CODES)
@friendly
def report(
    ctx: typer.Context,
    site: SiteOpt = None,
    start: Annotated[str | None, typer.Option("--from", help="First UTC day, YYYY-MM-DD.", show_default=False)] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last UTC day (inclusive), YYYY-MM-DD.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Reports from the rollups: pick a view (commands below), or give only `--site --from --to` for
    the all-in-one report.

    Without a view: traffic, sessions, conversions and API latency for one site over whole UTC days
    (exact; the `--json` keys are stable, see the README). The views add `--last`, `--tz`, `--csv`
    and `--png`; `streamproc report VIEW --help` says which of their figures are exact.

    Examples:

        streamproc report --site shop.example --from 2026-11-01 --to 2026-11-07 --json

        streamproc report overview --site shop.example --last 7d --tz Europe/Paris

        streamproc report overview --site shop.example --last 30d --png traffic.png

        streamproc report heatmap --site shop.example --path /pricing
    """
    if ctx.invoked_subcommand is not None:
        return
    from streamproc.postgres.migrate import check_migrated
    from streamproc.postgres.session import connect
    from streamproc.reports.report import build_report
    from streamproc.reports.uniques import Uniques
    from streamproc.reports.views import check_site

    if not site:
        raise typer.BadParameter(
            "is required (or name a view: `streamproc report overview --help`)", param_hint="--site"
        )
    for value, flag in ((start, "--from"), (end, "--to")):
        if value is None:
            raise typer.BadParameter("is required without a view (or use `report overview --last 7d`)", param_hint=flag)
    first, last = _parse_day(str(start), "--from"), _parse_day(str(end), "--to")
    if last < first:
        raise typer.BadParameter("--to is before --from", param_hint="--to")
    settings = settings_from(config, database_url=database_url, db_schema=schema)
    with connect(settings.database_url, settings.db_schema, "streamproc-report") as conn:
        check_migrated(conn, settings.approximate_uniques)
        conn.begin()
        check_site(conn, site)  # like every view: an unknown site is a usage error (exit 2), not zeros
        data = build_report(conn, site, first, last, Uniques(settings.approximate_uniques))
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        render.print_report(out, data)


@report_app.command("overview", epilog=EPILOG)
@report_view()
def overview(
    ctx: typer.Context,
    by: ByOpt = None,
) -> None:
    """Page views, visitors, sessions, bounce rate and average session, with the change against the
    period of the same length just before, and page views per hour or day (`--png`: views with
    visitors per day, or with sessions started per hour).

    Visitors and sessions are distinct counts over per-UTC-day sets: exact for UTC days, approximate
    (≈: the UTC day each local day overlaps most, or every UTC day `--last Nh` touches). Bounce rate
    and average session are over the sessions that started in the range (exact).

    Examples:

        streamproc report overview --site shop.example --last 7d --tz Europe/Paris

        streamproc report overview --site shop.example --last 24h --png today.png --json
    """
    from streamproc.reports.views import overview as build

    view(ctx, lambda conn, a: build(conn, a.site, a.window, a.unit, a.uniques), render.print_overview)


@report_app.command("pages", epilog=EPILOG)
@report_view()
def pages(
    ctx: typer.Context,
    limit: Annotated[int, limit_opt("paths")] = 20,
) -> None:
    """Top paths by page views (exact), with unique visitors per path (per UTC day sets: exact for UTC days).

    Example: `streamproc report pages --site shop.example --last 30d --limit 50 --csv > pages.csv`
    """
    from streamproc.reports.views import pages as build

    view(ctx, lambda conn, a: build(conn, a.site, a.window, limit, a.uniques), render.print_pages)


def _show_dimensions(ctx: typer.Context, name: str, names: tuple[str, ...], limit: int) -> None:
    from streamproc.reports.views import dimensions

    view(
        ctx, lambda conn, a: dimensions(conn, a.site, a.window, names, limit, name, a.uniques), render.print_dimensions
    )


@report_app.command("sources", epilog=EPILOG)
@report_view()
def sources(
    ctx: typer.Context,
    limit: Annotated[int, limit_opt("values per dimension")] = 10,
) -> None:
    """Where visitors come from: referrer hosts and utm_source / utm_medium / utm_campaign, with page
    views and unique visitors per value (per UTC day: exact for UTC days, ≈ otherwise).

    Example: `streamproc report sources --site shop.example --from 2026-11-01 --to 2026-11-30`
    """
    from streamproc.reports.views import SOURCES

    _show_dimensions(ctx, "sources", SOURCES, limit)


@report_app.command("devices", epilog=EPILOG)
@report_view()
def devices(
    ctx: typer.Context,
    limit: Annotated[int, limit_opt("values per dimension")] = 10,
) -> None:
    """Devices, browsers, operating systems and countries, with page views and unique visitors per value
    (per UTC day: exact for UTC days, ≈ otherwise).

    Example: `streamproc report devices --site shop.example --last 7d --json`
    """
    from streamproc.reports.views import DEVICES

    _show_dimensions(ctx, "devices", DEVICES, limit)


@report_app.command("bots", epilog=EPILOG)
@report_view(chart=False)
def bots(
    ctx: typer.Context,
    limit: Annotated[int, limit_opt("bots")] = 20,
) -> None:
    """Page views and clicks from bots (crawlers, monitors, HTTP libraries, headless browsers),
    per bot: what `filter_bots` kept out of every other view (per UTC day).

    Example: `streamproc report bots --site shop.example --last 7d`
    """
    from streamproc.reports.bots import bots as build
    from streamproc.reports.bots import print_bots

    view(ctx, lambda conn, a: build(conn, a.site, a.window, limit), print_bots)


def register(app: typer.Typer) -> None:
    """Add `report` and its sub-views to ``app``."""
    from streamproc.cli import report_events as cli_report_events  # noqa: F401  # registers api, conversions, realtime, heatmap

    app.add_typer(report_app, name="report")
