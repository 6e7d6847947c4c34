"""Scale-out on one consumer group: many workers, sharded streams."""

from __future__ import annotations

import random
import signal

import pytest

from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, wait_for
from tests.test_crash import assert_totals, log_lines


@pytest.mark.slow
def test_four_workers_one_killed_exact_totals(make_settings, schema, r, stream, daemons: Daemons) -> None:
    """Four worker processes share the group; one is SIGKILLed mid-run and never comes back.
    The others reclaim its entries after min-idle: totals are exact, nothing stays pending."""
    entries = list(Generator(seed=21, days=1, bad_ratio=0.005).entries(40_000))
    produce(r, stream, entries)
    procs = [
        daemons.start(make_settings(consumer=f"w{i}", batch_size=200, min_idle_ms=800), "--drain") for i in range(4)
    ]
    victim_i = random.Random(3).randrange(4)
    victim = procs[victim_i]

    def victim_holds_entries() -> bool:
        if not any(g["name"] in (b"g", "g") for g in r.xinfo_groups(stream)):
            return False  # the workers have not created the group yet
        return any(
            c["name"] in (f"w{victim_i}", f"w{victim_i}".encode()) and c["pending"] > 0
            for c in r.xinfo_consumers(stream, "g")
        )

    wait_for(victim_holds_entries, 60, "the victim to hold entries")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    for p in procs:
        if p is not victim:
            assert p.wait(timeout=240) == 0, daemons.logs()[-3000:]
    assert r.xpending(stream, "g")["pending"] == 0
    reclaimed = sum(line["reclaimed"] for p in procs if p is not victim for line in log_lines(p.logfile, "drained"))  # type: ignore[attr-defined]
    assert reclaimed > 0, "the survivors took over the dead worker's pending entries"
    assert_totals(make_settings(), entries)


def test_sharded_streams_are_read_fairly(make_settings, schema, r, ns: str, daemons: Daemons) -> None:
    """A daemon reading `events:{0..3}` serves every shard from its first batches on, even when
    one shard holds far more entries than the others, and drains them all."""
    shards = [f"{ns}:events:{{{i}}}" for i in range(4)]
    sizes = [20_000, 500, 500, 500]
    gen = Generator(seed=5, days=1, bad_ratio=0)
    all_entries = []
    for shard, n in zip(shards, sizes, strict=True):
        entries = list(gen.entries(n))
        produce(r, shard, entries)
        all_entries.extend(entries)
    settings = make_settings(streams=f"{ns}:events:{{0..3}}", batch_size=250)
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=240) == 0, daemons.logs()[-3000:]
    for shard in shards:
        assert r.xinfo_groups(shard)[0]["pending"] == 0
        assert r.xinfo_groups(shard)[0]["lag"] == 0
    # Fairness: every read takes up to COUNT from each shard, so the small shards are served
    # alongside the big one from the first batch on and are done within two batches.
    batches = log_lines(proc.logfile, "batch")  # type: ignore[attr-defined]
    assert batches[0]["by_stream"] == {shard: 250 for shard in shards}
    # Order-free: two flushers may log their batches in either order.
    small = {s: [b["by_stream"][s] for b in batches if b.get("by_stream", {}).get(s)] for s in shards[1:]}
    assert {s: (len(n) <= 2, sum(n)) for s, n in small.items()} == {s: (True, 500) for s in shards[1:]}, small
    assert_totals(settings, all_entries)
