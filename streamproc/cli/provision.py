"""`streamproc migrate`, `setup` and `schema`: what must exist before the daemon runs
(tables, partitions, consumer groups) and the contract producers follow."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamproc.cli.options import ConfigOpt, DatabaseOpt, RedisOpt, SchemaOpt, UniquesOpt, friendly, out, settings_from


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
    from streamproc.redis.url import parse_redis_url

    settings = settings_from(
        config,
        redis_url=redis_url,
        database_url=database_url,
        db_schema=schema,
        streams=streams,
        group=group,
        uniques=uniques,
    )
    parse_redis_url(settings.redis_url, cluster=settings.redis_cluster)  # a bad URL: exit 2 before any change
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
    out.print("next: `streamproc check` with the daemon's own settings and users")


def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the event contract (generated from the msgspec types).

    Examples:

        streamproc schema

        streamproc schema -o schemas/event.schema.json   # what the repository ships
    """
    from streamproc.core.events import schema_text

    text = schema_text()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
