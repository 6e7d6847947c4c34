"""Two workers upserting the same hot rows never deadlock; and the test can see a deadlock."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import psycopg.errors
import pytest

from streamproc.dev.synth import Generator, produce
from tests.chaos.checks import batches, figure, final_checks
from tests.conftest import Daemons, exit_code

BATCH = 20


def deadlocks(database_url: str) -> int:
    """Postgres's own count of deadlocks detected in this database (all sessions)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_two_workers_hot_keys_never_deadlock(make_settings, schema, r, stream, database_url, daemons: Daemons) -> None:
    """Two workers on one group, batches of 20 entries over few paths (4) and sites (5), so
    nearly every batch upserts rows the other worker's open transaction holds too, for thousands
    of batches: no 40P01 deadlock_detected in the logs nor in Postgres's deadlock counter, and
    exact totals."""
    gen = Generator(seed=41, days=1, bad_ratio=0.002)
    gen.paths, gen.path_weights = ["/", "/a", "/b", "/c"], [4.0, 3.0, 2.0, 1.0]
    entries = list(gen.entries(50_000))
    produce(r, stream, entries)
    before = deadlocks(database_url)
    settings = [make_settings(consumer=f"w{i}", batch_size=BATCH) for i in range(2)]
    procs = [daemons.start(s, "--drain") for s in settings]
    for p in procs:
        assert exit_code(p, 150) == 0, daemons.logs()[-3000:]
    per_worker = [len(batches(p)) for p in procs]
    assert min(per_worker) > 500 and sum(per_worker) >= 2000, per_worker
    _, lost, doubled = final_checks(settings[0], r, stream, entries, daemons)
    assert deadlocks(database_url) == before, "Postgres detected a deadlock"
    figure(
        f"Deadlock: 2 workers, {sum(per_worker):,} batches of {BATCH} ({per_worker}), 0 deadlocks (logs and"
        f" pg_stat_database); {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )


@pytest.mark.slow
def test_negative_control_opposite_order_upserts_deadlock(pg: psycopg.Connection[Any], database_url: str) -> None:
    """The check above can see a deadlock: two sessions upserting the same keys in opposite orders
    (no ORDER BY), concurrently, make Postgres raise DeadlockDetected (40P01, "deadlock detected"
    in the text the daemon would log) and bump pg_stat_database.deadlocks."""
    n = 5000
    pg.execute("CREATE TABLE scratch (k int PRIMARY KEY, v int NOT NULL)")
    pg.execute("INSERT INTO scratch SELECT k, 0 FROM generate_series(1, %s) AS k", (n,))
    search_path = pg.execute("SHOW search_path").fetchone()
    assert search_path is not None
    before = deadlocks(database_url)
    upsert = (
        "INSERT INTO scratch (k, v) SELECT k, 1 FROM unnest(%s::int[]) AS k"
        " ON CONFLICT (k) DO UPDATE SET v = scratch.v + 1"
    )
    caught: list[psycopg.errors.DeadlockDetected] = []

    def session(keys: list[int], barrier: threading.Barrier) -> None:
        with psycopg.connect(database_url, options=f"-c search_path={search_path[0]}") as conn:
            barrier.wait()
            try:
                with conn.transaction():
                    conn.execute(upsert, (keys,))
            except psycopg.errors.DeadlockDetected as exc:
                caught.append(exc)

    attempts = 0
    while not caught and attempts < 10:
        attempts += 1
        barrier = threading.Barrier(2)
        keys = list(range(1, n + 1))
        threads = [
            threading.Thread(target=session, args=(keys, barrier)),
            threading.Thread(target=session, args=(keys[::-1], barrier)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert caught, f"no deadlock in {attempts} attempts"
    assert caught[0].sqlstate == "40P01" and "deadlock detected" in str(caught[0])
    deadline = time.monotonic() + 10  # sessions report their statistics when they end
    while deadlocks(database_url) == before:
        assert time.monotonic() < deadline, "pg_stat_database.deadlocks did not move"
        time.sleep(0.2)
    figure(f"Deadlock negative control: DeadlockDetected (40P01) after {attempts} attempt(s); counter moved")
