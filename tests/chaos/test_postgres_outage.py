"""Postgres down for 30 s under load: no ack, bounded backoff, bounded memory, exact recovery."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate
from tests.chaos.checks import (
    Feeder,
    figure,
    final_checks,
    group_info,
    log_count,
    stop,
    wait_batches,
    wait_drained,
)
from tests.chaos.conftest import Throwaway
from tests.conftest import Daemons

OUTAGE_S = 30
BATCH = 500
RETRY_LINES = ("flush failed, retrying", "postgres unavailable, retrying")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (USER_HZ = 100)


@pytest.mark.slow
def test_postgres_down_30s_no_ack_bounded_backoff_then_resumes(
    make_settings, ns, stream, daemons: Daemons, throwaway: Throwaway
) -> None:
    """A durable Postgres is stopped (-m immediate) for 30 s while entries keep arriving. Meanwhile
    the daemon acks nothing (acked = entries-read - pending is frozen, the DLQ does not grow), holds
    at most flushers + 2 batches (it stops reading, so its memory stays flat), retries with backoff (a
    bounded number of retry lines, little CPU) and stays alive; once Postgres is back it resumes by
    itself and the totals are exact."""
    pg = throwaway.postgres(durable=True)
    migrate(pg.url, ns)
    rs = throwaway.redis()
    client = throwaway.client(rs.url)
    settings = make_settings(redis_url=rs.url, database_url=pg.url, batch_size=BATCH)
    entries = list(Generator(seed=32, days=1, bad_ratio=0.003).entries(80_000))
    before, during = entries[:20_000], entries[20_000:]

    proc = daemons.start(settings)
    with Feeder(client, stream, before, chunk=1000, pause_s=0.1):
        wait_batches(proc, 5)
        pg.stop("immediate")
        stopped_at = time.monotonic()
    time.sleep(1.0)  # let the batch that was committing at the stop settle

    base = group_info(client, stream)
    acked0 = int(base["entries-read"]) - int(base["pending"])
    dlq0 = client.xlen(f"{stream}:dlq")
    retries0 = log_count(proc, *RETRY_LINES)
    rss0, cpu0 = rss_kb(proc.pid), cpu_s(proc.pid)
    produce(client, stream, during)  # 60 000 entries the daemon must not pull into memory
    max_pending = max_rss = 0
    held = settings.flushers + 2  # committing, one queued, one being prepared
    while time.monotonic() - stopped_at < OUTAGE_S:
        assert proc.poll() is None, f"daemon exited during the outage: {proc.returncode}"
        g = group_info(client, stream)
        pending = int(g["pending"])
        assert pending >= int(base["pending"]), "pending shrank: something was acked"
        assert int(g["entries-read"]) - pending == acked0, f"entries were acked during the outage: {g}"
        assert client.xlen(f"{stream}:dlq") == dlq0, "dead letters written while nothing can commit"
        assert pending <= held * BATCH, f"the daemon holds more than {held} batches: {pending}"
        max_pending = max(max_pending, pending)
        max_rss = max(max_rss, rss_kb(proc.pid))
        time.sleep(0.5)
    retries = log_count(proc, *RETRY_LINES) - retries0
    cpu = cpu_s(proc.pid) - cpu0
    assert 3 <= retries < 30, f"{retries} retry lines in {OUTAGE_S} s"
    assert cpu < 0.1 * OUTAGE_S, f"{cpu:.1f} s CPU while waiting for Postgres: a busy loop?"
    assert max_rss - rss0 < 30 * 1024, f"RSS grew from {rss0} kB to {max_rss} kB during the outage"

    pg.start()
    restarted = time.monotonic()
    wait_drained(client, stream, 120, alive=[proc])
    recovered_s = time.monotonic() - restarted
    stop(proc)
    _, lost, doubled = final_checks(settings, client, stream, entries, daemons)
    figure(
        f"Postgres down {OUTAGE_S} s: {retries} retry lines, {cpu:.2f} s CPU, pending <= {max_pending}"
        f" ({held} batches = {held * BATCH}), RSS {rss0 // 1024} -> max {max_rss // 1024} MB while"
        f" {len(during):,} entries arrived, drained {recovered_s:.1f} s after restart;"
        f" {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )
