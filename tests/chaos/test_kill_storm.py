"""SIGKILL storm: two workers killed at random moments for as long as a producer writes."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from streamproc.dev.synth import Generator
from tests.chaos.checks import Feeder, figure, final_checks, redelivered, skipped_by_ledger, tail
from tests.conftest import READY_TIMEOUT_S, Daemons, exit_code, is_ready

N_EVENTS = 240_000
MAX_DELIVERIES = 5  # the default: these kills never take a good entry there (daemon/redelivery.py)
POISON = {"type": "page_view", "site": "poison.example", "ts": "1700000000000", "path": "/poison"}


@pytest.mark.slow
# Bounded in count, each start by READY_TIMEOUT_S; on a loaded machine the whole run (each start
# compiling its user-agent rules) can take several minutes, more than the suite's default per-test
# timeout: a bound for a hang.
@pytest.mark.timeout(1200)
def test_sigkill_storm_two_workers(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Two workers (w0, w1) are each SIGKILLed 0.2-3 s after their `ready` line (so while they
    work, not while they load their user-agent rules, whatever the machine's speed), at least
    three times each, and restarted under the same consumer name while 240 000 entries stream
    in; a final `--drain` run finishes. The workers run with the default settings (enrichment
    and bot filtering on), as in production.
    Every good event is counted exactly once, nothing stays pending, the DLQ holds exactly the
    malformed entries plus one injected poison entry (delivered more than max_deliveries times)."""
    rng = random.Random(2024)
    entries = list(Generator(seed=31, days=1, bad_ratio=0.002).entries(N_EVENTS))

    # A poison entry already delivered MAX_DELIVERIES + 1 times to w0: dead-lettered, never counted.
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    r.xadd(stream, POISON)
    r.xreadgroup("g", "w0", {stream: ">"}, count=1)
    for _ in range(MAX_DELIVERIES):
        r.xreadgroup("g", "w0", {stream: "0"}, count=1)

    def start(name: str) -> subprocess.Popen[bytes]:
        settings = make_settings(
            consumer=name,
            batch_size=rng.choice((200, 500, 1000)),
            backlog_batch_size=rng.choice((1000, 10_000)),  # reads that grow under the backlog, or not
            max_deliveries=MAX_DELIVERIES,
        )
        return daemons.start(settings)

    names = ("w0", "w1")
    kills: Counter[str] = Counter()
    started = time.monotonic()
    with Feeder(r, stream, entries, chunk=4000, pause_s=0.45) as feeder:
        procs = {name: start(name) for name in names}
        # Each worker's kill is due a drawn time after its `ready` line is seen (None: not seen
        # yet). The loop is bounded in count (it ends once the feeder is done and each worker
        # was killed three times) and each start by READY_TIMEOUT_S (a hang, not slowness).
        life_s = {name: rng.uniform(0.2, 3) for name in names}
        kill_at: dict[str, float | None] = dict.fromkeys(names)
        started_at = {name: time.monotonic() for name in names}
        while not (feeder.done() and min(kills[n] for n in names) >= 3):
            for name in names:
                proc = procs[name]
                assert proc.poll() is None, f"{name} died on its own ({proc.returncode}): {tail(proc)}"
                due = kill_at[name]
                if due is None:
                    if is_ready(proc):
                        kill_at[name] = time.monotonic() + life_s[name]
                    else:
                        assert time.monotonic() - started_at[name] < READY_TIMEOUT_S, f"{name} hangs at start"
                    continue
                if time.monotonic() < due:
                    continue
                proc.send_signal(signal.SIGKILL)
                assert proc.wait() == -signal.SIGKILL
                kills[name] += 1
                procs[name] = start(name)
                started_at[name], kill_at[name], life_s[name] = time.monotonic(), None, rng.uniform(0.2, 3)
            time.sleep(0.02)
        for name, proc in procs.items():  # the storm ends with a last kill of each
            assert proc.poll() is None, f"{name} died on its own ({proc.returncode}): {tail(proc)}"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills[name] += 1
    storm_s = time.monotonic() - started

    final = make_settings(consumer="w0", min_idle_ms=500, max_deliveries=MAX_DELIVERIES)
    drain = daemons.start(final, "--drain")
    # 240 000 entries: one to four minutes after `ready` depending on the machine's load; a bound for a hang.
    assert exit_code(drain, 600) == 0, daemons.logs()[-3000:]
    assert all(n >= 3 for n in kills.values()), kills

    events, lost, doubled = final_checks(final, r, stream, entries, daemons, poison=[POISON])
    assert (lost, doubled) == (0, 0)
    figure(
        f"SIGKILL storm: {sum(kills.values())} kills ({dict(kills)}), {len(entries) + 1:,} entries"
        f" ({events:,} valid events) over a {storm_s:.0f} s storm, {lost} lost, {doubled} doubled,"
        f" {redelivered(daemons):,} entries redelivered after kills (own pending or reclaimed),"
        f" {skipped_by_ledger(daemons, entries):,} of them already committed and skipped by the ledger"
    )
