"""The connection to Postgres dies around COMMIT: the commit either landed or not; the daemon can't tell."""

from __future__ import annotations

import pytest

from streamproc.dev.synth import Generator
from tests.chaos.checks import Feeder, batches, figure, final_checks, log_count, stop, wait_batches, wait_drained
from tests.chaos.conftest import Proxies, via
from tests.chaos.proxy import Mode
from tests.conftest import Daemons

MODES: tuple[Mode, ...] = ("after", "before", "after", "before", "after", "before")


@pytest.mark.slow
def test_commit_reply_lost_or_commit_lost(
    make_settings, schema, r, stream, database_url, daemons: Daemons, proxies: Proxies
) -> None:
    """Daemon -> proxy -> Postgres. Six times during a run the proxy resets the connection right
    after the daemon sends COMMIT: three times before forwarding it (the batch rolled back), three
    times after the server answered (the batch committed, the answer is lost). Each time the daemon
    logs a retry and retries the batch; for a landed commit the ledger turns the whole retried batch
    into duplicates (ok = 0). Totals are exact.

    One flusher: the count of ok = 0 batches needs each trap to meet a fresh batch's COMMIT. With
    two, the other flusher's batches can satisfy the wait between traps while the first still
    retries, and the next trap then lands on that retry's COMMIT: two traps, one ok = 0 line (seen
    in CI; the totals stay exact, the count of this test does not)."""
    proxy = proxies(database_url, postgres=True)
    direct = make_settings(batch_size=200)
    settings = make_settings(batch_size=200, database_url=via(database_url, proxy), flushers=1)
    entries = list(Generator(seed=33, days=1, bad_ratio=0.005).entries(30_000))

    proc = daemons.start(settings)
    with Feeder(r, stream, entries, chunk=1000, pause_s=0.15):
        wait_batches(proc, 3)  # the start-up transactions (stream registration, ledger prune) are done
        for i, mode in enumerate(MODES):
            proxy.reset_on_commit(mode)
            assert proxy.wait_fired(mode, MODES[: i + 1].count(mode), 30), f"trap {i} ({mode}) never fired"
            wait_batches(proc, len(batches(proc)) + 2)
    wait_drained(r, stream, 60, alive=[proc])
    stop(proc)

    retries = log_count(proc, "flush failed, retrying")
    assert retries >= len(MODES), retries
    # A landed commit's retry finds every entry of its batch in the ledger.
    landed = [b for b in batches(proc) if b["ok"] == 0 and b["duplicates"] > 0]
    assert len(landed) >= MODES.count("after"), landed
    assert proxy.fired == {"before": 3, "after": 3}
    _, lost, doubled = final_checks(direct, r, stream, entries, daemons)
    figure(
        f"COMMIT ack lost: {proxy.fired['after']} landed + {proxy.fired['before']} not landed resets,"
        f" {retries} retries logged, {sum(b['duplicates'] for b in landed)} entries of landed batches"
        f" skipped by the ledger; {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )
