"""Entries trimmed before any worker read them are counted, not silently skipped.

Before, a producer's ``XADD … MAXLEN 1000`` while the workers were behind lost
2 000 of 3 000 entries with ``trimmed=0``, no metric and no alert.
"""

from __future__ import annotations

import subprocess
from typing import Final

import redis
from redis.cluster import RedisCluster

from streamproc.config import Settings
from streamproc.dev.synth import Generator, SynthEntry, produce
from streamproc.redis.groupstate import read_group_state
from tests.conftest import Daemons, exit_code
from tests.test_crash import assert_totals, log_lines

# A bound on a `--drain` run of a few hundred entries that only a hang outlasts.
DRAIN_HANG_S: Final = 120.0


def test_entries_trimmed_before_delivery_are_counted(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """The group exists, no worker runs, a producer writes 3 000 entries with MAXLEN 1000: the
    daemon's first read skips 2 000 deleted entries and counts exactly 2 000 (one `entries deleted
    before delivery` line, `trimmed` in the totals, the trimmed-entries metric behind the alert);
    the 1 000 left are counted exactly; a second run counts nothing more."""
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    entries = [e for e in Generator(seed=71, days=1, bad_ratio=0).entries(3_300) if not e.event.get("_duplicate")]
    entries = entries[:3_000]
    pipe = r.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(stream, entry.fields, maxlen=1_000, approximate=False)  # type: ignore[arg-type]
    pipe.execute()
    assert r.xlen(stream) == 1_000

    settings = make_settings()
    proc = daemons.start(settings, "--drain")
    assert proc.wait(timeout=120) == 0, daemons.logs()[-2000:]
    lost = log_lines(proc.logfile, "entries deleted before delivery")  # type: ignore[attr-defined]
    assert [(x["stream"], x["entries"]) for x in lost] == [(stream, 2_000)], lost
    (drained,) = log_lines(proc.logfile, "drained")  # type: ignore[attr-defined]
    assert drained["trimmed"] == 2_000
    assert_totals(settings, entries[-1_000:])

    again = daemons.start(settings, "--drain")
    assert again.wait(timeout=120) == 0
    assert log_lines(again.logfile, "entries deleted before delivery") == []  # type: ignore[attr-defined]


def trim_under_a_dead_consumer(client: redis.Redis | RedisCluster, stream: str) -> list[SynthEntry]:
    """200 entries; a consumer that then dies reads the first 100; ``XTRIM MAXLEN 50`` deletes
    its 100 pending entries and the 50 after them no one read. Returns the 200 produced."""
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    entries = [e for e in Generator(seed=72, days=1, bad_ratio=0).entries(260) if not e.event.get("_duplicate")]
    entries = entries[:200]
    produce(client, stream, entries)
    client.xreadgroup("g", "dead", {stream: ">"}, count=100)
    assert client.xtrim(stream, maxlen=50, approximate=False) == 150
    return entries


def assert_drains_counting_the_trim(
    proc: subprocess.Popen[bytes], daemons: Daemons, settings: Settings, entries: list[SynthEntry]
) -> None:
    """``--drain`` exits 0 within a bound that only catches a hang; the 50 left are counted, the
    150 trimmed are counted as trimmed (100 pending ones reclaimed, 50 lost before delivery)."""
    try:
        code = exit_code(proc, timeout_s=DRAIN_HANG_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"--drain still running after {DRAIN_HANG_S} s: {daemons.logs()[-2000:]}") from None
    assert code == 0, daemons.logs()[-2000:]
    (drained,) = log_lines(proc.logfile, "drained")  # type: ignore[attr-defined]
    assert drained["trimmed"] == len(entries) - 50, drained
    assert_totals(settings, entries[-50:])


def test_drain_ends_when_the_pending_and_undelivered_entries_were_trimmed(
    make_settings, schema, r: redis.Redis, stream: str, daemons: Daemons
) -> None:
    """A dead consumer's 100 pending entries and 50 unread ones are trimmed away. Before Redis 8
    the group's lag then stays at 50 after the last entry was read (its read counter missed the
    trimmed ones): `run --drain`, which waited for lag 0, never ended. It ends once nothing is
    pending and no entry follows the group's position."""
    entries = trim_under_a_dead_consumer(r, stream)
    settings = make_settings(min_idle_ms=100)
    assert_drains_counting_the_trim(daemons.start(settings, "--drain"), daemons, settings, entries)


def test_status_lag_after_the_group_read_across_trimmed_entries(r: redis.Redis, stream: str) -> None:
    """A group reads 100 of 200 entries, the stream is trimmed to its last 50, the group reads 30
    more: 50 are left, then 20, then none, then 5 new. Redis 7 says 100, 70, 50 and 55 (its read
    counter misses the 50 trimmed before the group got to them, for good); the lag `status`,
    `top` and the lag gauge report is the stream's own count."""
    r.xgroup_create(stream, "g", id="0", mkstream=True)
    for i in range(200):
        r.xadd(stream, {"n": str(i)})

    def read_and_ack(n: int) -> None:
        ((_, rows),) = r.xreadgroup("g", "c", {stream: ">"}, count=n)
        assert len(rows) == n
        r.xack(stream, "g", *[eid for eid, _ in rows])

    def lag() -> tuple[int, bool]:
        state = read_group_state(r, stream, "g")
        return state["lag"], state["lag_exact"]

    read_and_ack(100)
    r.xtrim(stream, maxlen=50, approximate=False)
    assert lag() == (50, True)
    read_and_ack(30)
    assert lag() == (20, True)
    read_and_ack(20)
    assert lag() == (0, True)
    for i in range(5):
        r.xadd(stream, {"n": str(200 + i)})
    assert lag() == (5, True)
