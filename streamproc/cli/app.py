"""The ``streamproc`` command line.

Exit codes: 0 success; 1 runtime failure (server unreachable, schema not
migrated, drain deadline passed); 2 bad usage or invalid configuration;
3 the consumer group vanished while the daemon ran.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamproc import __version__
from streamproc.cli.options import (
    ConfigOpt,
    DatabaseOpt,
    LogLevelOpt,
    RedisOpt,
    SchemaOpt,
    UniquesOpt,
    err,
    friendly,
    out,
    settings_from,
)
from streamproc.errors import ConfigError

# Re-exported for command modules written against streamproc.cli.app.
__all__ = [
    "ConfigOpt",
    "DatabaseOpt",
    "LogLevelOpt",
    "RedisOpt",
    "SchemaOpt",
    "app",
    "err",
    "friendly",
    "main",
    "out",
    "settings_from",
]

app = typer.Typer(
    name="streamproc",
    help="Redis Streams -> Postgres analytics rollups, counted exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def version_callback(value: bool) -> None:
    if value:
        out.print(f"streamproc {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Redis Streams -> Postgres analytics rollups, counted exactly once.

    Start with `streamproc demo`; in production run `streamproc migrate`
    once, then `streamproc run` under systemd.
    """


# --- commands ------------------------------------------------------------------


@app.command()
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
        uniques=uniques,
        log_level=log_level,
    )
    raise typer.Exit(run_daemon(settings, drain=drain))


@app.command()
@friendly
def migrate(
    config: ConfigOpt = None,
    database_url: DatabaseOpt = None,
    schema: SchemaOpt = None,
    uniques: UniquesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Apply the SQL migrations in `sql/` (idempotent, versioned, safe to run concurrently).

    With `--uniques approximate` also those of `sql/approximate/` (HyperLogLog
    tables; the Postgres `hll` extension must be installable).

    Example: `streamproc migrate --database-url postgresql://owner@db/analytics`
    """
    from streamproc.postgres.migrate import migrate as apply

    settings = settings_from(config, database_url=database_url, db_schema=schema, uniques=uniques)
    applied = apply(settings.database_url, settings.db_schema, settings.approximate_uniques)
    names = [f"{m.version:03d}_{m.name}" for m in applied]
    if as_json:
        out.print_json(json.dumps({"schema": settings.db_schema, "applied": names}))
    elif names:
        out.print(f"applied {len(names)} migration(s) to schema {settings.db_schema}: {', '.join(names)}")
    else:
        out.print(f"schema {settings.db_schema} is up to date")


@app.command()
@friendly
def setup(
    config: ConfigOpt = None,
    redis_url: RedisOpt = None,
    database_url: DatabaseOpt = None,
    schema: SchemaOpt = None,
    streams: Annotated[
        str | None,
        typer.Option("--streams", help="Streams to provision [env: STREAMPROC_STREAMS].", show_default=False),
    ] = None,
    group: Annotated[
        str | None, typer.Option("--group", help="Consumer group [env: STREAMPROC_GROUP].", show_default=False)
    ] = None,
    skip_migrate: Annotated[bool, typer.Option("--skip-migrate", help="Only create the consumer groups.")] = False,
    uniques: UniquesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Provision with an account that has the rights: migrations, then the consumer groups.

    The daemon itself can then run as a least-privilege Redis user that may not
    create groups (deploy/redis/streamproc.acl) and a Postgres role that may not
    change the schema (deploy/postgres/roles.sql).

    Example: `streamproc setup --redis-url redis://admin:...@redis/0 --database-url postgresql://owner@db/analytics`
    """
    from streamproc.postgres.migrate import migrate as apply
    from streamproc.postgres.partitions import maintain as partition
    from streamproc.redis.source import RedisSource

    settings = settings_from(
        config,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=schema,
        streams=streams,
        group=group,
        uniques=uniques,
    )
    applied = [] if skip_migrate else apply(settings.database_url, settings.db_schema, settings.approximate_uniques)
    made = [] if skip_migrate else partition(settings.database_url, settings.db_schema, drop=False).created
    source = RedisSource.from_settings(settings, "setup")
    try:
        created = source.ensure_groups(settings.group_start_id)
    finally:
        source.close()
    result: dict[str, object] = {
        "schema": settings.db_schema,
        "migrations_applied": [f"{m.version:03d}_{m.name}" for m in applied],
        "partitions_created": len(made),
        "group": settings.group,
        "groups_created": created,
        "streams": list(settings.streams),
    }
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    if not skip_migrate:
        names = [f"{m.version:03d}_{m.name}" for m in applied]
        out.print(f"schema {settings.db_schema}: " + (f"applied {', '.join(names)}" if names else "up to date"))
        out.print(f"partitions: created {len(made)} (then run `streamproc maintain` daily)")
    for stream in settings.streams:
        state = "created" if stream in created else "already there"
        out.print(f"group {settings.group} on {stream}: {state}")


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the event contract (generated from the msgspec types)."""
    from streamproc.core.events import schema_text

    text = schema_text()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@app.command()
@friendly
def demo(
    events: Annotated[
        int, typer.Option("--events", "-n", min=1, max=5_000_000, help="How many synthetic events to produce.")
    ] = 50_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic traffic.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final summary as JSON.")] = False,
) -> None:
    """Produce synthetic traffic, process it, print a report.

    Starts throwaway Redis and Postgres on free loopback ports unless both
    STREAMPROC_REDIS_URL and STREAMPROC_DATABASE_URL are set (then it uses the
    stream `streamproc-demo:events` and the schema `streamproc_demo` there).
    """
    from streamproc.dev.demo import run_demo

    external = bool(os.environ.get("STREAMPROC_REDIS_URL")) and bool(os.environ.get("STREAMPROC_DATABASE_URL"))
    summary = run_demo(events, seed, external=external, console=out)
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")


from streamproc.cli import maintain as cli_maintain  # noqa: E402  # after `app` exists: commands register on it
from streamproc.cli import ops as cli_ops  # noqa: E402
from streamproc.cli import report as cli_report  # noqa: E402

cli_report.register(app)
cli_ops.register(app)
cli_maintain.register(app)


def main() -> None:
    try:
        app()
    except ConfigError as exc:  # raised outside a command, e.g. while parsing
        err.print(f"streamproc: error: {exc}")
        sys.exit(2)
