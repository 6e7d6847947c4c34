"""Redis primary -> replica failover behind a proxy, with acks lost in replication."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis

from streamproc.config import Settings
from streamproc.dev.synth import Generator, SynthEntry, produce
from tests.chaos.checks import (
    batches,
    figure,
    final_checks,
    pending_after,
    skipped_by_ledger,
    stop,
    wait_batches,
    wait_delivered,
    wait_drained,
)
from tests.chaos.conftest import Proxies, Throwaway, host_port, via
from tests.conftest import Daemons, exit_code

SPLIT_BRAIN_S = 0.5


@dataclass
class Failover:
    proc: subprocess.Popen[bytes]
    client: redis.Redis  # the new primary
    settings: Settings
    entries: list[SynthEntry]
    split_brain_batches: int


def fail_over(
    make_settings: Callable[..., Settings], stream: str, daemons: Daemons, throwaway: Throwaway, proxies: Proxies
) -> Failover:
    """Primary + replica; the daemon reads the primary through a proxy. Mid-run: promote the
    replica, let the daemon ack on the old primary for SPLIT_BRAIN_S, switch the proxy to the new
    primary, reset its connections, kill the old primary; more entries arrive on the new one."""
    primary = throwaway.redis("primary")
    replica = throwaway.redis("replica", extra=("--replicaof", "127.0.0.1", str(primary.port)))
    p_client, r_client = throwaway.client(primary.url), throwaway.client(replica.url)
    deadline = time.monotonic() + 20
    while r_client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica never synced"
        time.sleep(0.05)

    entries = list(Generator(seed=38, days=1, bad_ratio=0.004).entries(50_000))
    first, second = entries[:40_000], entries[40_000:]
    produce(p_client, stream, first)
    assert p_client.execute_command("WAIT", 1, 10_000) == 1, "the replica did not receive every entry"

    proxy = proxies(primary.url)
    settings = make_settings(redis_url=via(primary.url, proxy), batch_size=300)
    proc = daemons.start(settings)
    wait_batches(proc, 10)

    r_client.execute_command("REPLICAOF", "NO", "ONE")
    before = len(batches(proc))
    time.sleep(SPLIT_BRAIN_S)  # these acks land on the old primary only
    split_brain_batches = len(batches(proc)) - before
    proxy.switch_target(host_port(replica.url))
    proxy.cut()
    primary.kill()
    assert split_brain_batches > 0, "no batch was acked on the old primary after the promotion"
    produce(r_client, stream, second)
    return Failover(proc, r_client, settings, entries, split_brain_batches)


@pytest.mark.slow
def test_replica_failover_daemon_recovers_lost_acks_by_itself(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway, proxies: Proxies
) -> None:
    """After the failover the new primary still lists as pending (under the daemon's own name) the
    entries whose acks went to the old primary only. The running daemon must get them back
    (redelivery or reclaim) and let the ledger skip them: nothing stays pending, totals are exact."""
    f = fail_over(make_settings, stream, daemons, throwaway, proxies)
    # The lost acks come back by reclaim after min_idle_ms (1 s); the rest of the wait is the backlog
    # (tens of thousands of entries, minutes on a loaded machine): a bound for a hang, not a speed.
    wait_drained(f.client, stream, 180, alive=[f.proc])
    stop(f.proc)
    redelivered = skipped_by_ledger(daemons, f.entries)
    assert redelivered > 0, "no ack was lost in the failover: the test did not test anything"
    final_checks(f.settings, f.client, stream, f.entries, daemons)


@pytest.mark.slow
def test_replica_failover_ledger_absorbs_redeliveries_after_restart(
    make_settings, schema, stream, daemons: Daemons, throwaway: Throwaway, proxies: Proxies
) -> None:
    """The same failover; once every entry has been delivered, the daemon is restarted under the
    same name, which re-reads its pending entries at start. Every entry acked only on the old
    primary comes back; the ledger skips all of them: totals are exact, nothing stays pending,
    the DLQ holds each bad entry exactly once."""
    f = fail_over(make_settings, stream, daemons, throwaway, proxies)
    wait_delivered(f.client, stream, 60, alive=[f.proc])
    stuck = pending_after(f.client, stream, 3)
    stop(f.proc)
    again = daemons.start(f.settings, "--drain")
    assert exit_code(again, 60) == 0, daemons.logs()[-3000:]
    wait_drained(f.client, stream, 5)
    redelivered = skipped_by_ledger(daemons, f.entries)
    assert redelivered > 0, "no ack was lost in the failover: the test did not test anything"
    _, lost, doubled = final_checks(f.settings, f.client, stream, f.entries, daemons)
    figure(
        f"Replica failover: {f.split_brain_batches} batches acked on the old primary after promotion,"
        f" {stuck} entries left pending under the daemon's name until restarted,"
        f" {redelivered:,} redelivered entries skipped by the ledger; {len(f.entries):,} entries,"
        f" {lost} lost, {doubled} doubled"
    )
