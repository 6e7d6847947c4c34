"""`streamproc report`: read the rollups back for people and scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated

import typer

from streamproc.cli import ConfigOpt, DatabaseOpt, SchemaOpt, friendly, out, settings_from


def _parse_day(value: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2026-01-31", param_hint=flag) from None


def register(app: typer.Typer) -> None:
    """Add the report command(s) to ``app``."""

    @app.command()
    @friendly
    def report(
        site: Annotated[str, typer.Option("--site", help="Site to report on, as producers send it.")],
        start: Annotated[str, typer.Option("--from", help="First UTC day, YYYY-MM-DD.")],
        end: Annotated[str, typer.Option("--to", help="Last UTC day (inclusive), YYYY-MM-DD.")],
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        config: ConfigOpt = None,
        database_url: DatabaseOpt = None,
        schema: SchemaOpt = None,
    ) -> None:
        """Traffic, sessions, conversions and API latency for one site over a range of UTC days.

        Example: `streamproc report --site shop.example --from 2026-11-01 --to 2026-11-07 --json`
        """
        from streamproc.render import print_report
        from streamproc.report import build_report
        from streamproc.sink import connect

        first, last = _parse_day(start, "--from"), _parse_day(end, "--to")
        if last < first:
            raise typer.BadParameter("--to is before --from", param_hint="--to")
        settings = settings_from(config, database_url=database_url, db_schema=schema)
        with connect(settings.database_url, settings.db_schema, "streamproc-report") as conn:
            from streamproc.migrate import check_migrated

            check_migrated(conn)
            data = build_report(conn, site, first, last)
        if as_json:
            sys.stdout.write(json.dumps(data, indent=2) + "\n")
        else:
            print_report(out, data)
