"""`streamproc run`: the daemon in the foreground (added to the app by :mod:`streamproc.cli.app`)."""

from __future__ import annotations

from typing import Annotated

import typer

from streamproc.cli.options import (
    ConfigOpt,
    DatabaseOpt,
    LogLevelOpt,
    RedisOpt,
    SchemaOpt,
    UniquesOpt,
    friendly,
    settings_from,
)


@friendly
def run(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    database_url: DatabaseOpt = None,
    schema: SchemaOpt = None,
    streams: Annotated[
        str | None,
        typer.Option(
            "--streams",
            help="Comma-separated stream keys; `events:{0..7}` ranges expand"
            " [env: STREAMPROC_STREAMS] (default events).",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group", help="Consumer group [env: STREAMPROC_GROUP] (default streamproc).", show_default=False
        ),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer",
            help="Stable consumer name, unique per instance [env: STREAMPROC_CONSUMER] (default: hostname).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help="Entries per read [env: STREAMPROC_BATCH_SIZE] (default 1000).", show_default=False
        ),
    ] = None,
    block_ms: Annotated[
        int | None,
        typer.Option(
            "--block-ms", help="XREADGROUP BLOCK in ms [env: STREAMPROC_BLOCK_MS] (default 2000).", show_default=False
        ),
    ] = None,
    min_idle_ms: Annotated[
        int | None,
        typer.Option(
            "--min-idle-ms",
            help="Reclaim entries idle this long on other consumers [env: STREAMPROC_MIN_IDLE_MS] (default 60000).",
            show_default=False,
        ),
    ] = None,
    max_deliveries: Annotated[
        int | None,
        typer.Option(
            "--max-deliveries",
            help="Dead-letter an entry delivered more often than this [env: STREAMPROC_MAX_DELIVERIES] (default 5).",
            show_default=False,
        ),
    ] = None,
    country_db: Annotated[
        str | None,
        typer.Option(
            "--country-db",
            help="MaxMind-format .mmdb (GeoLite2/DB-IP Country or City) for countries from `ip`"
            " [env: STREAMPROC_COUNTRY_DB] (default: none).",
            show_default=False,
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option("--drain", help="Exit 0 once no stream has undelivered or pending entries (backfills, tests)."),
    ] = False,
    uniques: UniquesOpt = None,
    log_level: LogLevelOpt = None,
) -> None:
    """Run the daemon: read, validate, fold, commit to Postgres, then XACK.

    SIGTERM finishes the batch in hand (commit + ack) and exits 0; a second
    signal exits at once. Visitor ids are hashed with STREAMPROC_VISITOR_SECRET
    (required; also read from `$CREDENTIALS_DIRECTORY/visitor_secret`).

    Examples:

        STREAMPROC_VISITOR_SECRET=$(openssl rand -hex 32) streamproc run

        streamproc run --streams 'events:{0..7}' --consumer "$(hostname)-1"

        streamproc run --drain --batch-size 5000   # backfill, then exit
    """
    from streamproc.daemon.run import run_daemon

    settings = settings_from(
        config,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=schema,
        streams=streams,
        group=group,
        consumer=consumer,
        batch_size=batch_size,
        block_ms=block_ms,
        min_idle_ms=min_idle_ms,
        max_deliveries=max_deliveries,
        country_db=country_db,
        uniques=uniques,
        log_level=log_level,
    )
    raise typer.Exit(run_daemon(settings, drain=drain))
