"""Reclaiming stalled entries with XAUTOCLAIM, and keeping a live batch from being reclaimed.

Real daemon processes against the suite's Redis and Postgres. A commit is stalled by a lock the
test holds on the ledger table; waits are for events (log lines, XPENDING states, INFO
commandstats counters), never for a span of time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis

from streamproc.dev.synth import Generator, SynthEntry, produce
from streamproc.redis.source import RedisSource
from tests.conftest import Daemons, wait_for
from tests.test_crash import assert_totals, is_stopped, log_lines

GOOD = {"type": "page_view", "site": "s.example", "ts": "1700000000000", "path": "/", "visitor": "v1"}


def calls(r: redis.Redis, command: str) -> int:
    """Calls of ``command`` since the server started (INFO commandstats)."""
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def command_calls(r: redis.Redis) -> dict[str, int]:
    return {c: calls(r, c) for c in ("xautoclaim", "xclaim", "xrange", "xpending")}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {c: after[c] - before[c] for c in before}


def pending_by_consumer(r: redis.Redis, stream: str) -> dict[bytes, tuple[bytes, int]]:
    """Every pending entry: id -> (owner, delivery count)."""
    rows = r.xpending_range(stream, "g", "-", "+", 100_000)
    return {row["message_id"]: (row["consumer"], int(row["times_delivered"])) for row in rows}


@contextmanager
def ledger_locked(database_url: str, schema: str) -> Iterator[None]:
    """Every batch commit blocks (its ledger insert waits for this lock) until the block ends."""
    blocker = psycopg.connect(database_url, options=f"-c search_path={schema}")
    try:
        blocker.execute("LOCK TABLE applied_ranges IN EXCLUSIVE MODE")
        yield
    finally:
        blocker.rollback()
        blocker.close()


def refreshes(proc: Any) -> list[dict[str, Any]]:
    return log_lines(proc.logfile, "refreshed entries in hand")


def retries(entries: list[SynthEntry]) -> int:
    """Producer retries among ``entries``: the same event id again, counted once by design."""
    return sum(1 for e in entries if e.event and e.event.get("_duplicate"))


def drained(proc: Any) -> dict[str, Any]:
    (line,) = log_lines(proc.logfile, "drained")
    return line


def test_killed_worker_entries_are_reclaimed_with_xautoclaim(
    make_settings, schema, r, stream, daemons: Daemons, database_url: str
) -> None:
    """A worker is killed with SIGKILL while it holds batches (its commits blocked); a second
    worker takes every one of its pending entries over with XAUTOCLAIM: exactly as many
    reclaimed as the dead worker held, nothing pending, totals equal the truth. INFO
    commandstats shows XAUTOCLAIM calls and no per-entry XRANGE probes."""
    entries = list(Generator(seed=31, days=1, bad_ratio=0).entries(3000))
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    produce(r, stream, entries)
    with ledger_locked(database_url, schema):
        a = daemons.start(make_settings(consumer="a", batch_size=400, flushers=2))
        wait_for(lambda: r.xpending(stream, "g")["pending"] >= 800, 60, "worker A to hold two batches")
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(timeout=30) == -signal.SIGKILL
    held = {eid for eid, (owner, _) in pending_by_consumer(r, stream).items() if owner == b"a"}
    assert len(held) >= 800

    before = command_calls(r)
    settings = make_settings(consumer="b", batch_size=500, min_idle_ms=300)
    b = daemons.start(settings, "--drain")
    assert b.wait(timeout=120) == 0, daemons.logs()[-3000:]
    used = delta(before, command_calls(r))

    assert r.xpending(stream, "g")["pending"] == 0
    assert drained(b)["reclaimed"] == len(held), "each entry of the dead worker taken over once"
    assert_totals(settings, entries)
    assert used["xautoclaim"] >= 1
    assert used["xrange"] <= 2, f"XRANGE only for the ledger prune and the drain check, never per entry: {used}"


def test_entries_trimmed_while_pending_are_counted_from_xautoclaims_deleted_ids(
    make_settings, schema, r, stream, daemons: Daemons, pg
) -> None:
    """A dead consumer holds 200 entries; 150 of them are trimmed from the stream. The daemon's
    XAUTOCLAIM reports those as deleted (its third reply element): 150 counted as trimmed, the
    50 others reclaimed and counted, the pending list empty, no XRANGE probe per entry."""
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    for i in range(200):
        r.xadd(stream, {**GOOD, "path": f"/p{i % 5}"})
    r.xreadgroup("g", "dead", {stream: ">"}, count=200)
    assert r.xtrim(stream, maxlen=50, approximate=False) == 150

    before = command_calls(r)
    settings = make_settings(min_idle_ms=100)
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=60) == 0, daemons.logs()[-2000:]
    used = delta(before, command_calls(r))

    assert r.xpending(stream, "g")["pending"] == 0
    line = drained(proc)
    assert (line["trimmed"], line["reclaimed"], line["ok"]) == (150, 50, 50), line
    assert pg.execute("SELECT sum(views) FROM pageviews_daily").fetchone() == (50,)
    assert used["xautoclaim"] >= 1
    assert used["xrange"] <= 2, f"trimmed ids come from XAUTOCLAIM, not one XRANGE probe each: {used}"


def test_stalled_commit_is_not_reclaimed_by_itself_or_another_worker(
    make_settings, schema, r, stream, daemons: Daemons, database_url: str, redis_url: str
) -> None:
    """Worker A's commit stalls (the ledger is locked) far longer than min_idle_ms while A and a
    second worker B keep trying to reclaim. A refreshes its batch's idle time (XCLAIM JUSTID),
    so neither takes it: the entries stay on A with one delivery each, a third reclaim made
    by the test itself gets nothing, and once the lock goes A counts each entry once."""
    entries = list(Generator(seed=32, days=1, bad_ratio=0).entries(100))
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    produce(r, stream, entries)
    min_idle_ms = 3000
    a_settings = make_settings(consumer="a", batch_size=100, min_idle_ms=min_idle_ms, reclaim_interval_ms=50)
    b_settings = make_settings(consumer="b", batch_size=100, min_idle_ms=min_idle_ms, reclaim_interval_ms=50)
    with ledger_locked(database_url, schema):
        a = daemons.start(a_settings, "--drain")
        wait_for(lambda: r.xpending(stream, "g")["pending"] == 100, 60, "worker A to hold the batch")
        b = daemons.start(b_settings, "--drain")
        # Each refresh comes a quarter of min_idle_ms after the previous one (or the read):
        # after five, the batch has been in hand longer than min_idle_ms.
        wait_for(lambda: len(refreshes(a)) >= 5, 120, "five refreshes of the batch in hand")
        # Each reclaim turn of A and B starts with XPENDING IDLE (the refreshes add a few more).
        start = calls(r, "xpending")
        wait_for(lambda: calls(r, "xpending") >= start + 40, 60, "forty more reclaim turns of A and B")
        probe = RedisSource(redis_url, [stream], "g", "probe", 10, client=redis.Redis.from_url(redis_url))
        try:
            assert probe.reclaim(min_idle_ms, 1000).is_empty(), "a live batch was reclaimed"
        finally:
            probe.close()
        pending = pending_by_consumer(r, stream)
        assert len(pending) == 100
        assert set(pending.values()) == {(b"a", 1)}, "every entry still on A, delivered once"
        assert all(line["entries"] == 100 and line["not_pending_here"] == 0 for line in refreshes(a))
    assert a.wait(timeout=60) == 0, daemons.logs()[-3000:]
    assert b.wait(timeout=60) == 0, daemons.logs()[-3000:]
    got_a, got_b = drained(a), drained(b)
    again = retries(entries)
    assert (got_a["ok"], got_a["duplicates"], got_a["reclaimed"]) == (100 - again, again, 0), got_a
    assert (got_b["ok"], got_b["reclaimed"]) == (0, 0), got_b
    assert_totals(a_settings, entries)


def test_zombie_worker_woken_during_anothers_commit_does_not_take_its_entries_back(
    make_settings, schema, r, stream, daemons: Daemons, database_url: str
) -> None:
    """Worker A freezes (SIGSTOP) holding a batch; B reclaims it after min_idle_ms, and B's
    commit stalls. A wakes (SIGCONT): its refresh finds the entries no longer pending under A
    and leaves them with B (XCLAIM with min idle 0 would have taken them back). When the lock
    goes, both commit; the ledger counts each entry once and totals equal the truth.

    The steps are ordered, not timed: A reads every entry in its first read (batch_size 300),
    so what it holds is known whenever it froze and no later read of A's can get anything; A
    wakes only once B holds every entry."""
    entries = list(Generator(seed=33, days=1, bad_ratio=0).entries(300))
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    produce(r, stream, entries)
    a_settings = make_settings(consumer="a", batch_size=300, flushers=1, min_idle_ms=2000)
    a = daemons.start(a_settings, "--drain", STREAMPROC_FAILPOINTS="before_flush@1:stop")
    wait_for(lambda: is_stopped(a.pid), 60, "worker A to freeze")
    pending = pending_by_consumer(r, stream)
    held = set(pending)
    assert len(held) == 300 and {owner for owner, _ in pending.values()} == {b"a"}, "A holds every entry"

    with ledger_locked(database_url, schema):
        b_settings = make_settings(consumer="b", batch_size=1000, min_idle_ms=500)
        b = daemons.start(b_settings, "--drain")

        def all_on_b() -> bool:
            pending = pending_by_consumer(r, stream)
            return len(pending) == 300 and all(owner == b"b" for owner, _ in pending.values())

        wait_for(all_on_b, 60, "B to reclaim A's batch")
        a.send_signal(signal.SIGCONT)
        wait_for(
            lambda: sum(line["entries"] + line["not_pending_here"] for line in refreshes(a)) >= len(held),
            60,
            "A's refresh of its (former) entries",
        )
        assert sum(line["entries"] for line in refreshes(a)) == 0, "A took nothing back"
        assert all_on_b(), "the entries are still B's"
    assert a.wait(timeout=60) == 0, daemons.logs()[-3000:]
    assert b.wait(timeout=60) == 0, daemons.logs()[-3000:]
    got_a, got_b = drained(a), drained(b)
    assert got_a["ok"] + got_b["ok"] == 300 - retries(entries), (got_a, got_b)
    # A commits its batch after B reclaimed it: one of the two finds each entry in the ledger.
    assert got_a["duplicates"] + got_b["duplicates"] == len(held) + retries(entries), (got_a, got_b)
    assert r.xpending(stream, "g")["pending"] == 0
    assert_totals(b_settings, entries)
