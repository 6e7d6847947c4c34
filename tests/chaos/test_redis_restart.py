"""Redis killed under the daemon: restarted from its AOF, or restarted empty."""

from __future__ import annotations

import time

import pytest

from streamproc.dev.synth import Generator, produce
from tests.chaos.checks import (
    batches,
    figure,
    final_checks,
    log_count,
    logfile,
    lost_and_doubled,
    pending_after,
    stop,
    wait_batches,
    wait_delivered,
    wait_drained,
)
from tests.chaos.conftest import Throwaway
from tests.conftest import Daemons, exit_code
from tests.test_crash import assert_totals, log_lines

AOF = ("--appendonly", "yes", "--appendfsync", "always")


@pytest.mark.slow
def test_redis_kill_9_restart_from_aof(make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway) -> None:
    """Redis with `appendonly yes`, `appendfsync always` is SIGKILLed mid-run and a new process is
    started on the same port and directory: every entry, ack and dead letter written before the
    kill is in the AOF. The daemon retries until Redis is back and carries on; totals are exact."""
    rs = throwaway.redis("aof", extra=AOF)
    settings = make_settings(redis_url=rs.url, batch_size=300)
    entries = list(Generator(seed=35, days=1, bad_ratio=0.004).entries(40_000))
    first, second = entries[:25_000], entries[25_000:]
    produce(throwaway.client(rs.url), stream, first)

    proc = daemons.start(settings)
    wait_batches(proc, 10)
    rs.kill()
    killed_after = len(batches(proc))
    time.sleep(1.0)
    assert proc.poll() is None, "the daemon must wait for Redis, not exit"
    rs = throwaway.restart_redis(rs)
    client = throwaway.client(rs.url)
    produce(client, stream, second)
    wait_delivered(client, stream, 60, alive=[proc])
    # An XREADGROUP executed (and written to the AOF) just before the kill, its reply lost, leaves
    # entries pending under the daemon's own name that it does not hold; the running daemon takes
    # them back after min-idle (test_failover.py / test_redis_network.py pin that). A final --drain
    # run under the same name also picks them up, so this test stays about what the AOF keeps.
    stuck = pending_after(client, stream, 5)
    stop(proc)
    assert exit_code(daemons.start(settings, "--drain"), 60) == 0, daemons.logs()[-3000:]

    assert log_count(proc, "redis unavailable, retrying") >= 1
    _, lost, doubled = final_checks(settings, client, stream, entries, daemons)
    figure(
        f"Redis kill -9 + AOF restart: killed after {killed_after} batches,"
        f" {log_count(proc, 'redis unavailable, retrying')} retries logged, {stuck} entries stuck pending until"
        f" the final --drain run;"
        f" {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )


@pytest.mark.slow
def test_redis_restarted_empty_stops_with_group_missing(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """Redis without persistence is killed and restarted empty while the daemon runs, and producers
    write again. The daemon exits 3 with a `fatal` GroupMissing line and does not recreate the group
    (the new entries stay untouched); what it processed before counts exactly once."""
    rs = throwaway.redis("volatile")
    settings = make_settings(redis_url=rs.url, batch_size=300)
    before = list(Generator(seed=36, days=1, bad_ratio=0.004).entries(6_000))
    later = list(Generator(seed=37, days=1, bad_ratio=0).entries(500))
    client = throwaway.client(rs.url)
    produce(client, stream, before)
    proc = daemons.start(settings)
    wait_drained(client, stream, 60, alive=[proc])
    time.sleep(0.3)  # idle in XREADGROUP BLOCK, as a quiet daemon would be

    rs.kill()
    rs = throwaway.restart_redis(rs)
    fresh = throwaway.client(rs.url)
    produce(fresh, stream, later)
    assert exit_code(proc, 60) == 3, daemons.logs()[-2000:]

    fatal = log_lines(logfile(proc), "fatal")
    assert len(fatal) == 1 and fatal[0]["kind"] == "GroupMissing", fatal
    assert "Not recreating" in fatal[0]["error"], fatal
    assert fresh.xinfo_groups(stream) == [], "the group was recreated on the empty Redis"
    assert fresh.xlen(stream) == len(later)
    assert "deadlock" not in daemons.logs().lower()
    _, lost, doubled = lost_and_doubled(settings, before)
    assert_totals(settings, before)
    figure(
        f"Redis restarted empty: exit {proc.returncode}, fatal {fatal[0]['kind']}, group not recreated,"
        f" {len(later)} new entries left untouched;"
        f" {len(before):,} entries processed before, {lost} lost, {doubled} doubled"
    )
