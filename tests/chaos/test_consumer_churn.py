"""Daemons restarted again and again under stable names: the group's consumer list stays bounded."""

from __future__ import annotations

import random
import signal
import subprocess
import time

import pytest
import redis

from streamproc.dev.synth import Generator
from tests.chaos.checks import Feeder, figure, final_checks, tail
from tests.conftest import READY_TIMEOUT_S, Daemons, exit_code, is_ready

NAMES = ("w0", "w1", "w2")
RESTARTS = 50


def consumer_names(r: redis.Redis, stream: str) -> set[str]:
    return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in r.xinfo_consumers(stream, "g")}


@pytest.mark.slow
# Bounded in count, each start by READY_TIMEOUT_S; on a loaded machine the whole run (50 starts)
# can take several minutes, more than the suite's default per-test timeout: a bound for a hang.
@pytest.mark.timeout(900)
def test_fifty_restarts_keep_xinfo_consumers_bounded(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Three slots run daemons named w0, w1, w2; each lives 0.1-0.8 s past its `ready` line (so
    it has read, claimed or acked under its name), is stopped by SIGTERM or SIGKILL in turn and is
    replaced under the same name, 50 times in all, while a producer writes. XINFO CONSUMERS never
    lists more than the three names; a final `--drain` leaves nothing pending; totals are exact."""
    rng = random.Random(40)
    entries = list(Generator(seed=40, days=1, bad_ratio=0.004).entries(30_000))

    def start(name: str) -> subprocess.Popen[bytes]:
        # The default max_deliveries: an entry is delivered in a batch at most twice, then alone,
        # so these kills never take a good entry to the poison limit (streamproc.daemon.redelivery).
        # The events carry no user agent, so enrichment and bot filtering are off: each of the 50
        # starts then skips compiling the user-agent rules (seconds of CPU each; the kill storm
        # keeps them on).
        settings = make_settings(consumer=name, batch_size=rng.choice((100, 500)), enrich=False, filter_bots=False)
        return daemons.start(settings)

    ready_at: dict[int, float] = {}  # pid -> when its `ready` line was seen

    def due(proc: subprocess.Popen[bytes], started: float, life_s: float) -> bool:
        if proc.pid not in ready_at:
            if not is_ready(proc):
                assert proc.poll() is None, f"daemon exited at start: {tail(proc)}"
                assert time.monotonic() - started < READY_TIMEOUT_S, f"daemon hangs at start: {tail(proc)}"
                return False
            ready_at[proc.pid] = time.monotonic()
        return time.monotonic() - ready_at[proc.pid] >= life_s

    # Bounded in count (RESTARTS) and, step by step, in time: a start by READY_TIMEOUT_S, a stop
    # by the 40 s wait below; the feeder ends on its own.
    restarts = max_seen = 0
    exits: dict[int, int] = {}
    with Feeder(r, stream, entries, chunk=1000, pause_s=0.4):
        slots = {name: (start(name), time.monotonic(), rng.uniform(0.1, 0.8)) for name in NAMES}
        while restarts < RESTARTS:
            for name, (proc, started, life_s) in list(slots.items()):
                if restarts >= RESTARTS or not due(proc, started, life_s):
                    continue
                proc.send_signal(signal.SIGKILL if restarts % 2 else signal.SIGTERM)
                try:
                    code = proc.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"{name} did not exit 40 s after the signal: {tail(proc)}") from None
                assert code in (0, -signal.SIGTERM, -signal.SIGKILL), f"{name} exited with {code}"
                exits[code] = exits.get(code, 0) + 1
                restarts += 1
                slots[name] = (start(name), time.monotonic(), rng.uniform(0.1, 0.8))
            if r.exists(stream) and r.xinfo_groups(stream):
                seen = consumer_names(r, stream)
                assert seen <= set(NAMES), seen
                max_seen = max(max_seen, len(seen))
            time.sleep(0.05)
    for proc, _, _ in slots.values():
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    final = make_settings(consumer="w0", min_idle_ms=500, enrich=False, filter_bots=False)
    assert exit_code(daemons.start(final, "--drain"), 120) == 0, daemons.logs()[-3000:]
    names = consumer_names(r, stream)
    assert names <= set(NAMES), names
    _, lost, doubled = final_checks(final, r, stream, entries, daemons)
    figure(
        f"Consumer churn: {restarts} restarts (exit codes {exits}), XINFO CONSUMERS max {max_seen},"
        f" final {len(names)} ({', '.join(sorted(names))}); {len(entries):,} entries, {lost} lost, {doubled} doubled"
    )
