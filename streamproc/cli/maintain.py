"""`streamproc maintain`: partitions ahead, retention behind (registered on the main app).

Thin: parse options, call :func:`streamproc.postgres.partitions.maintain`, print what
was done (or ``--json``). Exit codes: 0 done, or another run holds the lock;
1 Postgres unreachable, schema not migrated, or a step failed; 2 bad usage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer

from streamproc.cli.options import ConfigOpt, DatabaseOpt, RedisOpt, SchemaOpt, err, friendly, out, settings_from
from streamproc.config import Settings
from streamproc.postgres import partitions

EXIT_CODES = "Exit codes: 0 done (or another run holds the lock); 1 runtime failure or a step failed; 2 bad usage."
LOCKED = "another maintain run holds the lock"


def parse_retain(values: Sequence[str]) -> dict[str, int]:
    """``["hourly=30", "pageviews_daily=800"]`` -> retention days of every rollup table.

    ``hourly`` and ``daily`` name every table of that kind; a table named
    itself wins over its group, whatever the order.
    """
    groups: dict[str, int] = {}
    tables: dict[str, int] = {}
    for item in values:
        name, sep, days = (part.strip() for part in item.partition("="))
        if not sep or not days.isdigit() or int(days) < 1:
            raise typer.BadParameter(f"expected TABLE=DAYS with DAYS >= 1, got {item!r}", param_hint="--retain")
        if name == partitions.LEDGER_TABLE:
            raise typer.BadParameter(
                "the ledger keeps rows by the ledger rule: set STREAMPROC_LEDGER_RETENTION_S instead",
                param_hint="--retain",
            )
        if name in partitions.RETENTION_GROUPS:
            groups[name] = int(days)
        elif name in partitions.DEFAULT_RETENTION_DAYS:
            tables[name] = int(days)
        else:
            known = ", ".join([*partitions.RETENTION_GROUPS, *partitions.DEFAULT_RETENTION_DAYS])
            raise typer.BadParameter(f"unknown table {name!r}; one of: {known}", param_hint="--retain")
    retention = dict(partitions.DEFAULT_RETENTION_DAYS)
    for group, n in groups.items():
        retention.update(dict.fromkeys(partitions.RETENTION_GROUPS[group], n))
    retention.update(tables)
    return retention


def first_entries_from(settings: Settings) -> partitions.FirstEntries:
    """The ledger bound's input: first entry of every registered or configured stream still in Redis."""
    from streamproc.redis.source import RedisSource

    def first(registered: Sequence[str]) -> Mapping[str, int | None]:
        streams = sorted({*registered, *settings.streams})
        source = RedisSource.from_settings(settings, "maintain", streams)
        try:
            return source.first_entry_ms()
        finally:
            source.close()

    return first


@friendly
def maintain(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    retain: Annotated[
        list[str] | None,
        typer.Option(
            "--retain",
            metavar="TABLE=DAYS",
            envvar="STREAMPROC_RETAIN",
            help="Keep TABLE's partitions DAYS days after their range ends; `hourly`/`daily` name every table of"
            " that kind. Repeatable; space-separated in the environment (default hourly=90 daily=400).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for a run holding the lock instead of exiting.")] = False,
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    schema: SchemaOpt = None,
    redis_url: RedisOpt = None,
    streams: Annotated[
        str | None,
        typer.Option(
            "--streams",
            help="Streams whose first entry bounds the ledger, besides those registered in Postgres"
            " [env: STREAMPROC_STREAMS].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create time partitions ahead, move rows out of DEFAULT, drop partitions past retention;
    delete sessions whose last event is past the sessions_daily retention.

    Rollup partitions are monthly, from one month back to three ahead; ledger
    partitions daily, from one day back to seven ahead. A ledger partition is
    dropped only once its whole range is older than both the first entry still
    in any stream and now - STREAMPROC_LEDGER_RETENTION_S; if Redis cannot be
    asked, no ledger partition is dropped. Runs under an advisory lock: start
    it from as many hosts as you like. Run it as the schema owner, daily.

    Examples:

        streamproc maintain --dry-run

        streamproc maintain --retain hourly=30 --retain pageviews_daily=800 --json
    """
    retention = parse_retain(retain or [])
    settings = settings_from(config, database_url=database_url, db_schema=schema, redis_url=redis_url, streams=streams)
    result = partitions.maintain(
        settings.database_url,
        settings.db_schema,
        retention_days=retention,
        ledger_retention_s=settings.ledger_retention_s,
        first_entries=first_entries_from(settings),
        dry_run=dry_run,
        wait=wait,
    )
    if as_json:
        data: dict[str, Any] = dataclasses.asdict(result)
        data["rows_moved"] = result.rows_moved
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        render(result)
    if result.errors:
        raise typer.Exit(1)


def render(result: partitions.Result) -> None:
    def say(line: str) -> None:
        out.print(line, highlight=False, soft_wrap=True)

    if result.lock_held_elsewhere:
        say(f"schema {result.schema}: {LOCKED}; nothing done")
        return
    would = "would be " if result.dry_run else ""
    say(
        f"schema {result.schema}{' (dry run: nothing changed)' if result.dry_run else ''}:"
        f" {len(result.created)} partitions {would}created ({result.rows_moved:,} rows moved from DEFAULT),"
        f" {len(result.dropped)} {would}dropped"
    )
    for c in result.created:
        say(f"  create {c['partition']:<36} {c['from']} .. {c['to']}  {c['rows_from_default']:,} rows from DEFAULT")
    for d in result.dropped:
        say(f"  drop   {d['partition']:<36} {d['from']} .. {d['to']}  {d['reason']}")
    for table, rows in result.pruned.items():
        say(f"{table}: {rows:,} rows {would}deleted (last event past the sessions_daily retention)")
    if result.ledger_keep_from_ms is not None:
        keep = dt.datetime.fromtimestamp(result.ledger_keep_from_ms / 1000, dt.UTC)
        say(f"ledger: entries from {keep:%Y-%m-%d %H:%M:%S} UTC on are kept")
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
    for e in result.errors:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the maintenance command(s) to ``app``."""
    app.command("maintain", epilog=EXIT_CODES)(maintain)
