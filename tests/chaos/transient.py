"""One scenario for every transient server condition: it starts while a batch is in hand.

:func:`ride_out` runs a real daemon on a stream, holds its next batch in the Postgres
commit (another session holds a lock on the ledger table), turns the condition on in a
real server, lets the commit go, and waits until the daemon reports the condition in a
`... retrying` line. While the condition lasts the daemon must stay up, keep the batch
pending with one delivery, dead-letter nothing; once it is cleared the stream drains and
the totals equal the truth, exactly once, and the dead-letter stream holds the malformed
entries only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from streamproc.config import Settings
from streamproc.dev.synth import Generator, produce
from tests.chaos.checks import final_checks, logfile, stop, tail, wait_drained
from tests.conftest import Daemons, wait_for
from tests.test_crash import log_lines

BATCH = 100
# Generous bounds on waits for things that do happen (a hang, not a speed, is what they catch).
BOUND_S = 120.0


@dataclass
class Condition:
    """A server condition: ``on()`` starts it (and returns once the server is in it), ``off()`` ends it."""

    on: Callable[[], None]
    off: Callable[[], None]
    readable: bool = True  # the server answers XPENDING during the condition (not while LOADING or BUSY)


def retry_lines(proc: subprocess.Popen[bytes], events: tuple[str, ...]) -> list[dict[str, Any]]:
    return [x for e in events for x in log_lines(logfile(proc), e)]


def waiting_on_lock(database_url: str) -> bool:
    """Some backend of the database waits for a lock (the daemon's commit, behind ours)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


def max_deliveries_pending(client: redis.Redis, stream: str) -> int:
    rows = client.xpending_range(stream, "g", "-", "+", 10_000)
    return max((int(p["times_delivered"]) for p in rows), default=0)


def ride_out(
    settings: Settings,
    client: redis.Redis,
    stream: str,
    daemons: Daemons,
    condition: Condition,
    seen: Callable[[dict[str, Any]], bool],
    *,
    events: tuple[str, ...] = ("redis unavailable, retrying",),
    seed: int = 7,
) -> list[dict[str, Any]]:
    """Run the scenario of this module; returns the retry lines that ``seen`` picked out.

    ``seen(line)``: whether a retry line reports the condition (its reason, its step).
    ``events``: the log events that carry retries. Raises AssertionError on any broken promise.
    """
    entries = list(Generator(seed=seed, days=1, bad_ratio=0.03).entries(6 * BATCH))
    first, second = entries[: 2 * BATCH], entries[2 * BATCH :]
    produce(client, stream, first)
    proc = daemons.start(settings)
    wait_drained(client, stream, BOUND_S, alive=[proc])

    # The locker's connection stays open until the condition ends: closing it would free a
    # connection slot that a condition (no slot left) may have taken on purpose.
    with psycopg.connect(settings.database_url, options=f"-c search_path={settings.db_schema}") as locker:
        locker.execute("LOCK TABLE applied_ranges IN SHARE MODE")  # no ledger insert gets through
        produce(client, stream, second)
        wait_for(lambda: waiting_on_lock(settings.database_url), BOUND_S, "the daemon's commit to wait on the lock")
        condition.on()
        try:
            locker.rollback()  # the commit goes through; its ack (or the next commit) meets the condition

            def reported() -> bool:
                assert proc.poll() is None, f"the daemon exited with {proc.returncode}: {tail(proc)}"
                return any(seen(x) for x in retry_lines(proc, events))

            wait_for(reported, BOUND_S, "the daemon to report the condition")
            if condition.readable:
                assert client.xpending(stream, "g")["pending"] > 0, "the batch in hand was acked during the condition"
                assert max_deliveries_pending(client, stream) == 1, "an entry was delivered again during the condition"
        finally:
            condition.off()
    wait_drained(client, stream, BOUND_S, alive=[proc])
    stop(proc)
    _, lost, doubled = final_checks(settings, client, stream, entries, daemons)
    assert (lost, doubled) == (0, 0)
    return [x for x in retry_lines(proc, events) if seen(x)]
