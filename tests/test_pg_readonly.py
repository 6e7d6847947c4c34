"""A read-only Postgres (a hot standby, a primary being demoted, a failover in progress) is waited out.

`cannot execute INSERT in a read-only transaction` (SQLSTATE 25006) is a transient
server condition: the daemon backs off and retries in process, its entries stay
pending with one delivery, and it commits once the server accepts writes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from streamproc.dev.localservers import PostgresServer, _as_postgres_user, _which, free_port, start_postgres
from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate
from tests.conftest import Daemons, wait_for
from tests.test_crash import assert_totals


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[PostgresServer, PostgresServer]]:
    """A throwaway primary and a hot standby streaming from it (pg_basebackup -R)."""
    primary = start_postgres()
    standby = PostgresServer(free_port(), primary.directory.parent / f"{primary.directory.name}-standby")
    standby._prefix = _as_postgres_user()
    try:
        standby.directory.mkdir()
        if standby._prefix:
            shutil.chown(standby.directory, "postgres", "postgres")
        subprocess.run(
            [
                *standby._prefix,
                _which("pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                primary.user,
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        standby.start()
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()


def in_recovery(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def test_standby_is_waited_out_until_promoted(
    make_settings, primary_and_standby, r, stream, ns: str, daemons: Daemons
) -> None:
    """The daemon pointed at a hot standby gets "read-only transaction" on every write: it keeps
    running and retrying (no exit, nothing dead-lettered, no entry delivered twice); once the
    standby is promoted it commits everything, with totals equal to the truth."""
    primary, standby = primary_and_standby
    migrate(primary.url, ns)
    wait_for(lambda: _has_schema(standby.url, ns), 60, "the standby to replay the migration")
    entries = list(Generator(seed=41, days=1, bad_ratio=0).entries(600))
    produce(r, stream, entries)
    settings = make_settings(database_url=standby.url, batch_size=200)
    proc = daemons.start(settings, "--drain")
    wait_for(lambda: daemons.logs().count("read-only transaction") >= 2, 120, "writes refused as read-only")
    assert proc.poll() is None, daemons.logs()[-3000:]
    # Refused already at start (registering the stream is a write): nothing read, or read once.
    assert all(p["times_delivered"] == 1 for p in r.xpending_range(stream, "g", "-", "+", 1000))
    assert r.xlen(f"{stream}:dlq") == 0
    standby.pg_ctl("promote", "-w")
    assert not in_recovery(standby.url)
    assert proc.wait(timeout=180) == 0, daemons.logs()[-3000:]
    assert r.xlen(f"{stream}:dlq") == 0
    assert_totals(settings, entries)


def _has_schema(url: str, schema: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.applied_entries",)).fetchone()
    return bool(row and row[0])
