"""Postgres refusing the daemon's transactions for a while, as real servers do, under a running daemon.

A primary switched to read-only (25006), the daemon's backend terminated in the middle of its
transaction (57P01), no connection slot left when it reconnects (53300), and the disk of its
tables full (53100): each starts while a batch is in hand (:mod:`tests.chaos.transient`). The
daemon backs off and retries, says why in its retry lines, never exits, dead-letters no good
entry and delivers none twice; once the condition ends it drains with exact totals.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from streamproc.dev.localservers import PostgresServer
from streamproc.postgres.migrate import migrate
from tests.chaos.conftest import Throwaway
from tests.chaos.transient import BOUND_S, Condition, ride_out
from tests.conftest import Daemons, wait_for
from tests.test_crash import is_stopped

RETRIES = ("flush failed, retrying", "postgres unavailable, retrying")


@pytest.fixture
def pg(throwaway: Throwaway) -> PostgresServer:
    """A Postgres of this test's own: the test reconfigures, fills or restarts it."""
    return throwaway.postgres()


@pytest.fixture
def admin(pg: PostgresServer) -> Iterator[psycopg.Connection[Any]]:
    """A superuser session on ``pg``, outside the daemon's."""
    with psycopg.connect(pg.url, autocommit=True, application_name="test-admin") as conn:
        yield conn


def daemon_settings(make_settings: Any, server: PostgresServer, ns: str) -> Any:
    migrate(server.url, ns)
    return make_settings(database_url=server.url, batch_size=100, flushers=1, enrich=False, filter_bots=False)


def said(*texts: str) -> Any:
    return lambda line: any(t in str(line.get("error", "")) for t in texts)


def daemon_backends(admin: psycopg.Connection[Any]) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'streamproc%' AND backend_type = 'client backend'"
    ).fetchall()
    return [int(pid) for (pid,) in rows]


def test_primary_turned_read_only_while_running(make_settings, r, stream, ns: str, pg, admin, daemons: Daemons) -> None:
    """ALTER SYSTEM SET default_transaction_read_only = on and a reload, under a running daemon:
    its next transaction fails with 25006 (read-only transaction), which is retried until the
    setting is turned off again; then everything commits once."""

    def set_read_only(on: bool) -> None:
        admin.execute(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}")
        admin.execute("SELECT pg_reload_conf()")
        want = "on" if on else "off"
        wait_for(lambda: _show(pg, "default_transaction_read_only") == want, BOUND_S, f"read-only {want}")

    ride_out(
        daemon_settings(make_settings, pg, ns),
        r,
        stream,
        daemons,
        Condition(lambda: set_read_only(True), lambda: set_read_only(False)),
        said("read-only transaction"),
        events=RETRIES,
    )


def test_backend_terminated_mid_transaction(make_settings, r, stream, ns: str, pg, admin, daemons: Daemons) -> None:
    """pg_terminate_backend of the daemon's backend while its transaction waits on a lock (57P01,
    `terminating connection due to administrator command`): the daemon reconnects and runs the
    whole transaction again; nothing is applied twice."""

    def terminate() -> None:
        waiting: list[Any] = []

        def found() -> bool:  # (a lock timeout may have sent the daemon to its backoff for a moment)
            waiting[:] = admin.execute("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchall()
            return bool(waiting)

        wait_for(found, BOUND_S, "the daemon's transaction to wait on the lock")
        for (pid,) in waiting:
            admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, int(BOUND_S * 1000)))

    ride_out(
        daemon_settings(make_settings, pg, ns),
        r,
        stream,
        daemons,
        Condition(terminate, lambda: None),
        said("administrator command", "server closed the connection", "connection is lost"),
        events=RETRIES,
    )


@pytest.fixture
def few_slots(pg: PostgresServer) -> PostgresServer:
    """``pg`` restarted with max_connections = 12."""
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_connections = 12")
    pg.stop()
    pg.start()
    return pg


def test_no_connection_slot_left_when_reconnecting(
    make_settings, r, stream, ns: str, few_slots, admin, daemons: Daemons
) -> None:
    """The daemon is frozen (SIGSTOP), its backends are terminated and every connection slot of
    max_connections is taken by others; thawed, it finds its connection gone and every new one
    refused with 53300 (`sorry, too many clients already`). It retries until slots are freed."""
    pg = few_slots
    fillers: list[psycopg.Connection[Any]] = []

    def take_every_slot() -> None:
        proc = daemons.procs[-1]
        proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: is_stopped(proc.pid), BOUND_S, "the daemon to stop")
        for pid in daemon_backends(admin):
            admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, int(BOUND_S * 1000)))
        for _ in range(20):
            try:
                fillers.append(psycopg.connect(pg.url, autocommit=True))
            except psycopg.OperationalError as exc:
                assert "too many clients" in str(exc), exc
                break
        else:
            raise AssertionError("max_connections never reached")
        proc.send_signal(signal.SIGCONT)

    def free_slots() -> None:
        for conn in fillers:
            conn.close()

    ride_out(
        daemon_settings(make_settings, pg, ns),
        r,
        stream,
        daemons,
        Condition(take_every_slot, free_slots),
        said("too many clients"),
        events=RETRIES,
    )


@pytest.fixture
def small_disk(pg: PostgresServer) -> Iterator[Path]:
    """A 16 MiB tmpfs in ``pg``'s directory, owned by the user Postgres runs as."""
    mount = pg.directory / "small-disk"
    mount.mkdir()
    owner = f"uid={_postgres_ids()}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=16m,mode=0700,{owner}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _postgres_ids() -> str:
    import pwd

    entry = pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    return f"{entry.pw_uid},gid={entry.pw_gid}"


def test_disk_full_under_the_tables(
    make_settings, r, stream, ns: str, pg, admin, daemons: Daemons, small_disk: Path
) -> None:
    """The schema's tables live in a tablespace on a small filesystem; a file fills it while a
    batch is in hand: the commit fails with 53100 (`could not extend file ... No space left on
    device`), the daemon retries, and commits once the file is removed."""
    admin.execute(f"CREATE TABLESPACE small LOCATION '{small_disk}'")
    admin.execute("ALTER DATABASE streamproc SET default_tablespace = small")
    filler = small_disk / "filler"

    def fill() -> None:
        with open(filler, "wb", buffering=0) as fh:
            try:
                for _ in range(4096):  # bounded: 256 MiB at most, the filesystem has 16
                    fh.write(b"\0" * 65536)
            except OSError:
                return
        raise AssertionError("the small filesystem never filled up")

    ride_out(
        daemon_settings(make_settings, pg, ns),
        r,
        stream,
        daemons,
        Condition(fill, lambda: filler.unlink()),
        said("No space left on device"),
        events=RETRIES,
    )


def _show(server: PostgresServer, name: str) -> str:
    with psycopg.connect(server.url) as conn:
        row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])
