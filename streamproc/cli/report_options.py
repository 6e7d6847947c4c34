"""Options and plumbing shared by the `streamproc report` sub-views (commands in :mod:`streamproc.cli.report`).

Parse the range and output options once (a bad one is a usage error, exit 2),
open a read session on the rollups, and print a view's data as rich tables,
JSON or CSV, with an optional PNG chart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from streamproc.cli.options import (
    App,
    ConfigOpt,
    DatabaseOpt,
    SchemaOpt,
    err,
    option,
    out,
    own_options,
    settings_from,
    with_options,
)
from streamproc.config import Settings
from streamproc.errors import SinkError
from streamproc.reports.timerange import RangeError, Unit, Window, make_window, parse_instant, pick_unit

if TYPE_CHECKING:
    from streamproc.reports.uniques import Uniques
    from streamproc.reports.views import Conn

APPROX = (
    "Page views, API figures, conversions, bounce rate and session length are exact for any range"
    " (whole UTC hours); visitors, sessions, sources/devices and clicks are kept per UTC day, so they"
    " are exact for UTC days and approximate with another --tz (the UTC day each local day overlaps"
    " most) or --last Nh (every UTC day the window touches), the same in every view."
)

SiteOpt = Annotated[
    str | None, typer.Option("--site", help="Site to report on, as producers send it.", show_default=False)
]
FromOpt = Annotated[
    str | None,
    typer.Option("--from", help="First day, YYYY-MM-DD (a local day with --tz).", show_default=False),
]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last day, inclusive (default: today).", show_default=False)]
LastOpt = Annotated[
    str | None,
    typer.Option(
        "--last",
        help="Instead of --from/--to: `24h` (the current hour and the 23 before), `7d`, `30d`"
        " (today and the days before, in --tz). Default 7d.",
        show_default=False,
    ),
]
TzOpt = Annotated[
    str | None,
    typer.Option(
        "--tz",
        help="Time zone of the days and labels, e.g. Europe/Paris (default UTC). Hourly rollups re-bucket"
        " exactly into local days; per-UTC-day figures (visitors, sessions, dimensions, clicks) are then"
        " approximate: see docs/reports.md.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON (stable keys).")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV with stable columns (see docs/reports.md).")]
PngOpt = Annotated[Path | None, typer.Option("--png", help="Also draw a chart into this PNG file.", show_default=False)]
SizeOpt = Annotated[str, typer.Option("--size", help="PNG size in pixels, WIDTHxHEIGHT.")]
ByOpt = Annotated[
    str | None,
    typer.Option(
        "--by",
        help="Series buckets: hour or day (default: hours for one day or up to 48 h, else days).",
        show_default=False,
    ),
]
NowOpt = Annotated[
    str | None,
    typer.Option("--now", hidden=True, help="Pretend the time is this instant (reproducible reports, tests)."),
]


Printer = Callable[[Console, dict[str, Any]], None]

EXIT_CODES = (
    "Exit codes: 0 ok; 1 Postgres unreachable, schema not migrated, chart not written; 2 bad usage, unknown site."
)
EPILOG = f"{APPROX}\n\n{EXIT_CODES}"

report_app = App(no_args_is_help=True, rich_markup_mode="markdown")  # help: the callback's docstring


_WINDOW = (
    option("site", SiteOpt, None),
    option("start", FromOpt, None),
    option("end", ToOpt, None),
    option("last", LastOpt, None),
    option("tz", TzOpt, None),
)
_FORMAT = (option("as_json", JsonOpt, False), option("as_csv", CsvOpt, False))
_CHART = (option("png", PngOpt, None), option("size", SizeOpt, "1200x600"))
_SOURCE = (
    option("config", ConfigOpt, None),
    option("database_url", DatabaseOpt, None),
    option("schema", SchemaOpt, None),
    option("now", NowOpt, None),
)


def report_view(*, window: bool = True, chart: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a sub-view ``fn(ctx, **own_options)`` that calls :func:`view`: its --help and parser
    get --site and (unless ``window=False``) --from/--to/--last/--tz before its own options, then
    --json/--csv, (unless ``chart=False``) --png/--size, and --config/--database-url/--schema; those
    reach :func:`ask` through ``ctx.params``, and streamproc errors leave as one line and an exit code."""
    before = _WINDOW if window else _WINDOW[:1]
    shared = [*_FORMAT, *(_CHART if chart else ()), *_SOURCE]

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        return with_options(fn, own_options(fn), shared, lambda _given, own: fn(**own), before=before)

    return decorate


def limit_opt(what: str) -> Any:
    return typer.Option("--limit", min=1, max=10_000, help=f"How many {what} to show.")


@dataclass(frozen=True)
class Ask:
    """What one report invocation asks for, validated."""

    site: str
    window: Window
    unit: Unit
    fmt: str  # human, json or csv
    png: Path | None
    size: tuple[int, int]
    settings: Settings
    now: dt.datetime

    @property
    def uniques(self) -> Uniques:
        from streamproc.reports.uniques import Uniques

        return Uniques(self.settings.approximate_uniques)


def ask(ctx: typer.Context) -> Ask:
    """Validate what one sub-view was given: its own options (``ctx.params``) merged with those given
    before the sub-view name (`report --site S pages`).

    Raises:
        typer.BadParameter: a missing site, a bad range, size or chart path (exit 2).
    """
    parent: dict[str, Any] = ctx.parent.params if ctx.parent is not None else {}
    given = {k: v for k, v in parent.items() if v} | {k: v for k, v in ctx.params.items() if v}
    site: str | None = given.get("site")
    start: str | None = given.get("start")
    end: str | None = given.get("end")
    as_json, as_csv = bool(given.get("as_json")), bool(given.get("as_csv"))
    png: Path | None = given.get("png")
    size: str = given.get("size", "1200x600")
    now: str | None = given.get("now")
    if not site:
        raise typer.BadParameter("is required: the site to report on", param_hint="--site")
    if as_json and as_csv:
        raise typer.BadParameter("give one of --json and --csv", param_hint="--csv")
    try:
        moment = parse_instant(now, "--now") if now else dt.datetime.now(dt.UTC)
        window = make_window(start=start, end=end, last=given.get("last"), tz=given.get("tz"), now=moment)
        unit = pick_unit(window, given.get("by"))
    except RangeError as exc:
        raise typer.BadParameter(str(exc), param_hint=exc.flag) from None
    pixels = (1200, 600)
    if png is not None:
        from streamproc.reports.charts import parse_size

        try:
            pixels = parse_size(size)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--size") from None
        if not png.parent.is_dir():
            raise typer.BadParameter(f"directory {str(png.parent)!r} does not exist", param_hint="--png")
    settings = settings_from(given.get("config"), database_url=given.get("database_url"), db_schema=given.get("schema"))
    fmt = "json" if as_json else "csv" if as_csv else "human"
    return Ask(site, window, unit, fmt, png, pixels, settings, moment)


def view(ctx: typer.Context, query: Callable[[Conn, Ask], dict[str, Any]], printer: Printer) -> None:
    """Run one sub-view: its options validated (:func:`ask`), ``query(conn, ask)`` on a read session
    (:func:`reading`), the data it returns printed as asked (:func:`emit`)."""
    a = ask(ctx)
    with reading(a) as conn:
        data = query(conn, a)
    emit(a, data, printer)


@contextlib.contextmanager
def reading(a: Ask) -> Iterator[Conn]:
    """A session on the rollups: schema migrated, site known; query failures become one clear line."""
    import psycopg

    from streamproc.postgres.migrate import check_migrated
    from streamproc.postgres.session import connect
    from streamproc.reports.views import check_site

    with connect(a.settings.database_url, a.settings.db_schema, "streamproc-report") as conn:
        check_migrated(conn, a.settings.approximate_uniques)
        conn.begin()
        try:
            check_site(conn, a.site)
            yield conn
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SinkError(f"report query failed: {first}") from exc


def emit(a: Ask, data: dict[str, Any], printer: Printer) -> None:
    """Chart first (if asked), then the data in the asked format on stdout."""
    from streamproc.reports.export import write_csv, write_json

    if a.png is not None:
        from streamproc.reports.charts import chart

        chart(data, a.png, a.size)
    if a.fmt == "json":
        write_json(sys.stdout, data)
    elif a.fmt == "csv":
        write_csv(sys.stdout, data)
    else:
        from streamproc.reports.literal import literal_console

        printer(literal_console(out), data)  # producer strings shown literally, whatever the view
    if a.png is not None:
        (out if a.fmt == "human" else err).print(
            f"chart written to {a.png} ({a.size[0]}×{a.size[1]} px)", highlight=False, soft_wrap=True
        )
