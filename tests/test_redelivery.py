"""Redelivered entries and the poison limit: deaths of the daemon never push a good entry there.

Real daemon processes, killed with SIGKILL at chosen points (failpoints), against the suite's
Redis and Postgres. Each restart takes another consumer name, so every batch it works on is
reclaimed from a dead consumer (XAUTOCLAIM), never read anew.
"""

from __future__ import annotations

import signal

import redis

from streamproc.dev.synth import Generator, produce
from tests.conftest import Daemons, exit_code
from tests.test_crash import assert_totals

POISON = {"type": "page_view", "site": "s.example", "ts": "1790000000000", "path": "/POISON-XYZ"}
RESTARTS = 40  # what systemd's Restart=on-failure does, bounded


def letters(r: redis.Redis, stream: str) -> list[tuple[bytes, str]]:
    """(source id, reason) of every dead letter."""
    return [(f[b"_dlq_id"], f[b"_dlq_reason"].decode()) for _, f in r.xrange(f"{stream}:dlq")]


def test_daemons_killed_holding_reclaimed_batches_never_dead_letter_good_entries(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """300 good entries and one that kills the worker (a failpoint keyed on its content) are
    pending under a consumer that died. Daemons are started one after the other, each under a
    new consumer name, and each is SIGKILLed at its 25th flush (or by the poison entry): every
    one dies holding entries it reclaimed from the one before. With the default max_deliveries
    (5), the good entries are committed exactly once and none is dead-lettered; the poison
    entry alone reaches the dead-letter stream, with a reason saying it was the only entry in
    hand each time the worker died.

    Before, each restart reclaimed the whole batch again: after five deaths every entry, good
    or not, was dead-lettered as "delivered 6 times"."""
    good = list(Generator(seed=71, days=1, bad_ratio=0).entries(300))
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    produce(r, stream, good[:150])
    poison_id = r.xadd(stream, POISON)
    produce(r, stream, good[150:])
    r.xreadgroup("g", "dead", {stream: ">"}, count=1000)  # first delivery, to a consumer that died
    assert r.xpending(stream, "g")["pending"] == 301

    exits = []
    for i in range(RESTARTS):
        settings = make_settings(consumer=f"w{i}", batch_size=1000, enrich=False, filter_bots=False)
        proc = daemons.start(settings, "--drain", STREAMPROC_FAILPOINTS="content=POISON-XYZ,before_flush@25")
        exits.append(exit_code(proc, 120))
        if exits[-1] == 0:
            break
    assert exits[-1] == 0, (exits, daemons.logs()[-3000:])
    assert r.xpending(stream, "g")["pending"] == 0
    dead = letters(r, stream)
    assert not [sid for sid, _ in dead if sid != poison_id], f"{len(dead)} dead letters, good entries among them"
    assert [sid for sid, _ in dead] == [poison_id], dead
    reason = dead[0][1]
    assert "delivered 6 times" in reason and "the only entry the worker held" in reason, reason
    assert_totals(settings, good)
    assert set(exits[:-1]) == {-signal.SIGKILL}, exits
    assert len(exits) > 5, "fewer deaths than the poison limit: the test proves nothing"


def test_an_entry_committed_each_time_before_the_worker_dies_is_never_dead_lettered(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """Three good entries, pending under a consumer that died. Every daemon started after it
    is SIGKILLed right after its first COMMIT, before its XACK (a failpoint): each entry, handed
    out alone, is committed and then redelivered until it passes max_deliveries. The ledger
    says it was applied, so it is acked, not dead-lettered: no dead letter, totals exact.

    Before, such an entry was dead-lettered as "delivered 6 times" although it was counted,
    and `dlq replay` would have counted it a second time."""
    good = list(Generator(seed=72, days=1, bad_ratio=0).entries(3))
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    produce(r, stream, good)
    r.xreadgroup("g", "dead", {stream: ">"}, count=10)

    exits = []
    for i in range(RESTARTS):
        settings = make_settings(consumer=f"w{i}", enrich=False, filter_bots=False)
        exits.append(exit_code(daemons.start(settings, "--drain", STREAMPROC_FAILPOINTS="after_commit@1"), 120))
        if exits[-1] == 0:
            break
    assert exits[-1] == 0, (exits, daemons.logs()[-3000:])
    assert letters(r, stream) == []
    assert r.xpending(stream, "g")["pending"] == 0
    assert_totals(settings, good)
    assert len(exits) > 5, "fewer deaths than the poison limit: the test proves nothing"
