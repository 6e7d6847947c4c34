"""Real servers for every test: throwaway Redis and Postgres.

Started once per session: in containers where a Docker engine answers, else as
local servers on free loopback ports (tests/testservers.py says how to choose),
or taken from STREAMPROC_TEST_REDIS_URL / STREAMPROC_TEST_DATABASE_URL. Each
test gets its own stream key and Postgres schema. A server that cannot start
fails the run; nothing is skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from streamproc.config import Settings, load_settings
from streamproc.dev.localservers import LocalServers
from streamproc.postgres.migrate import migrate
from tests.testservers import session_servers

SECRET = "test-visitor-secret-0123456789"


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str, LocalServers | None]]:
    redis_url = os.environ.get("STREAMPROC_TEST_REDIS_URL")
    database_url = os.environ.get("STREAMPROC_TEST_DATABASE_URL")
    if redis_url and database_url:
        yield redis_url, database_url, None
        return
    with session_servers() as found:
        yield found


@pytest.fixture
def redis_url(servers: tuple[str, str, Any]) -> str:
    return servers[0]


@pytest.fixture
def database_url(servers: tuple[str, str, Any]) -> str:
    return servers[1]


@pytest.fixture
def ns() -> str:
    """A fresh namespace: stream keys and the Postgres schema of one test."""
    return "t_" + secrets.token_hex(5)


@pytest.fixture
def stream(ns: str) -> str:
    return f"{ns}:events"


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(redis_url: str, database_url: str, ns: str, stream: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "redis_url": redis_url,
            "database_url": database_url,
            "db_schema": ns,
            "streams": stream,
            "group": "g",
            "consumer": "c1",
            "visitor_secret": SECRET,
            "block_ms": 200,
            "min_idle_ms": 1000,
            "reclaim_interval_ms": 200,
            # The suites replay traffic at fixed dates (a backfill, for the event contract's past bound).
            "max_event_age_days": 3650,
        }
        base.update(overrides)
        # A test that picks a batch size gets batches of that size (its faults and counts are
        # sized by it) unless it asks for reads that grow while behind; a test that picks none
        # runs the defaults, growth included.
        if "batch_size" in overrides and "backlog_batch_size" not in overrides:
            base["backlog_batch_size"] = overrides["batch_size"]
        return load_settings(base, environ={})

    return make


@pytest.fixture
def schema(database_url: str, ns: str) -> Iterator[str]:
    """A migrated schema of this test's own, dropped afterwards."""
    migrate(database_url, ns)
    yield ns
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


@pytest.fixture
def pg(database_url: str, schema: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        yield conn


def daemon_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update(
        {
            "STREAMPROC_REDIS_URL": settings.redis_url,
            "STREAMPROC_REDIS_CLUSTER": "1" if settings.redis_cluster else "0",
            "STREAMPROC_UNIQUES": settings.uniques,
            "STREAMPROC_FLUSHERS": str(settings.flushers),
            "STREAMPROC_DATABASE_URL": settings.database_url,
            "STREAMPROC_DB_SCHEMA": settings.db_schema,
            "STREAMPROC_STREAMS": ",".join(settings.streams),
            "STREAMPROC_GROUP": settings.group,
            "STREAMPROC_CONSUMER": settings.consumer,
            "STREAMPROC_BATCH_SIZE": str(settings.batch_size),
            "STREAMPROC_BACKLOG_BATCH_SIZE": str(settings.backlog_batch_size),
            "STREAMPROC_BLOCK_MS": str(settings.block_ms),
            "STREAMPROC_MIN_IDLE_MS": str(settings.min_idle_ms),
            "STREAMPROC_RECLAIM_INTERVAL_MS": str(settings.reclaim_interval_ms),
            "STREAMPROC_MAX_DELIVERIES": str(settings.max_deliveries),
            "STREAMPROC_MAX_EVENT_AGE_DAYS": str(settings.max_event_age_days),
            "STREAMPROC_ENRICH": "true" if settings.enrich else "false",
            "STREAMPROC_FILTER_BOTS": "true" if settings.filter_bots else "false",
            "STREAMPROC_VISITOR_SECRET": settings.visitor_secret or "",
            "STREAMPROC_LOG_LEVEL": "info",
            "STREAMPROC_METRICS_PORT": "0",
        }
    )
    env.update(extra)
    return env


# How long a daemon may take to log `ready`: imports, the Redis and Postgres checks, and the
# user-agent rules it compiles before saying it is up (about 3 s on an idle machine, 20 s and
# more on a loaded one; nothing when `enrich` and `filter_bots` are off). A bound that only
# catches a daemon that hangs at start, never a measure of its speed: generous on purpose.
READY_TIMEOUT_S = 300.0


def is_ready(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` (started by :meth:`Daemons.start`) has logged its `ready` line."""
    for line in Path(proc.logfile).read_text(errors="replace").splitlines():  # type: ignore[attr-defined]
        if '"ready"' in line:
            try:
                if json.loads(line).get("event") == "ready":
                    return True
            except ValueError:
                continue
    return False


def wait_ready(proc: subprocess.Popen[bytes], timeout_s: float = READY_TIMEOUT_S) -> float:
    """Wait until ``proc`` logs `ready`; returns ``time.monotonic()`` at the moment it was seen.

    Raises AssertionError (with the log's tail) if the process exits first or stays silent
    for ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while not is_ready(proc):
        if proc.poll() is not None and not is_ready(proc):  # (it may have logged `ready` since)
            log = Path(proc.logfile).read_text(errors="replace")  # type: ignore[attr-defined]
            raise AssertionError(f"daemon exited with {proc.returncode} before `ready`: {log[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon not ready after {timeout_s} s (a hang at start)")
        time.sleep(0.05)
    return time.monotonic()


def exit_code(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """``proc``'s exit code. ``timeout_s`` bounds its run once started: the start itself, until
    `ready` or an exit before it, has its own bound, READY_TIMEOUT_S. Raises
    subprocess.TimeoutExpired when the run outlasts ``timeout_s``."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while proc.poll() is None and not is_ready(proc):
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon not ready after {READY_TIMEOUT_S} s (a hang at start)")
        time.sleep(0.05)
    return proc.wait(timeout=timeout_s)


class Daemons:
    """Real ``streamproc run`` child processes; all killed at test end."""

    def __init__(self, logdir: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logdir = logdir

    def start(self, settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.logdir / f"daemon-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streamproc", "run", *args],
                env=daemon_env(settings, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc.logfile = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "".join(Path(p.logfile).read_text(errors="replace") for p in self.procs)  # type: ignore[attr-defined]

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    yield d
    d.stop_all()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)
