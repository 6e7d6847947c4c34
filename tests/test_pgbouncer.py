"""Through a real PgBouncer in transaction pooling mode, as most production Postgres runs.

Each transaction may land on another server connection: the schema and the
timeouts must travel with every transaction, prepared statements must not be
used, and advisory locks must live in a transaction, never in a session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from streamproc.dev.pgbouncer import PgBouncer, start_pgbouncer
from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, daemon_env
from tests.test_crash import assert_totals

POOL_SIZE = 4


@pytest.fixture(scope="module")
def bouncer(servers: tuple[str, str, Any]) -> Iterator[PgBouncer]:
    server = start_pgbouncer(servers[1], pool_size=POOL_SIZE)
    yield server
    server.stop()


@pytest.fixture
def two_schemas(database_url: str, ns: str) -> Iterator[tuple[str, str]]:
    names = (f"{ns}_a", f"{ns}_b")
    yield names
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def cli(settings: Any, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env=daemon_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def pin_server_connections(url: str, n: int) -> list[psycopg.Connection[Any]]:
    """``n`` clients inside open transactions: each holds one of the pool's server
    connections, so the next client lands on another one."""
    pins = []
    for _ in range(n):
        conn = psycopg.connect(url, prepare_threshold=None)
        conn.execute("SELECT 1")  # opens the transaction that pins a server connection
        pins.append(conn)
    return pins


def tables_in(database_url: str, schema: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {name for (name,) in rows}


def test_two_deployments_and_three_daemons_through_one_pgbouncer(
    make_settings, bouncer: PgBouncer, database_url: str, two_schemas: tuple[str, str], r, ns: str, daemons: Daemons
) -> None:
    """Two deployments (own schema, own stream) share one transaction-pooling PgBouncer: each
    `migrate` creates its tables in its own schema (none in `public`); a second `migrate` while
    other clients hold server connections finishes ("up to date") instead of waiting on a lock
    a pooled session kept; `maintain` never reports a lock nobody holds; three daemons (two on one
    deployment, one on the other) drain their streams with totals exactly equal to the truth."""
    schema_a, schema_b = two_schemas
    streams = {schema_a: f"{ns}:a", schema_b: f"{ns}:b"}
    settings = {
        s: make_settings(database_url=bouncer.url, db_schema=s, streams=streams[s], batch_size=150) for s in two_schemas
    }
    public_before = tables_in(database_url, "public")
    for schema in two_schemas:
        res = cli(settings[schema], "migrate")
        assert res.returncode == 0, res.stdout + res.stderr
    for schema in two_schemas:
        assert {"applied_entries", "schema_migrations", "pageviews_daily"} <= tables_in(database_url, schema)
    assert tables_in(database_url, "public") == public_before

    pins = pin_server_connections(bouncer.url, POOL_SIZE - 2)  # migrate and maintain use two
    try:
        again = cli(settings[schema_a], "migrate", timeout_s=60)
        assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
        for schema in two_schemas:
            res = cli(settings[schema], "maintain", "--json", timeout_s=60)
            assert res.returncode == 0, res.stdout + res.stderr
            assert json.loads(res.stdout)["lock_held_elsewhere"] is False
    finally:
        for conn in pins:
            conn.close()

    entries = {
        schema_a: list(Generator(seed=31, days=2, bad_ratio=0.01).entries(3000)),
        schema_b: list(Generator(seed=32, days=2, bad_ratio=0.01).entries(2000)),
    }
    for schema in two_schemas:
        produce(r, streams[schema], entries[schema])
    procs = [
        daemons.start(make_settings(**_fields(settings[schema_a]), consumer="a1"), "--drain"),
        daemons.start(make_settings(**_fields(settings[schema_a]), consumer="a2"), "--drain"),
        daemons.start(make_settings(**_fields(settings[schema_b]), consumer="b1"), "--drain"),
    ]
    for proc in procs:
        assert proc.wait(timeout=240) == 0, daemons.logs()[-3000:]
    assert "prepared statement" not in daemons.logs()
    for schema in two_schemas:
        assert_totals(settings[schema], entries[schema])


def _fields(settings: Any) -> dict[str, Any]:
    return {"database_url": settings.database_url, "db_schema": settings.db_schema, "streams": settings.streams}
