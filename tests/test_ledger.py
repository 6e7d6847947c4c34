"""The exactly-once ledger on a real Postgres.

Two transactions may hold the same entries at once (a zombie consumer's late batch and the
reclaim that took its entries over, a batch still committing on a lost connection and its
retry, a group rewound or failed over while a batch was in flight): the second must wait for
the first and skip what it committed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import psycopg
import pytest

from streamproc.core.decode import Accepted, decode_batch
from streamproc.postgres.batch import Claim, entry_key
from streamproc.postgres.sink import PostgresSink
from tests.conftest import wait_for
from tests.test_crash import assert_totals
from tests.test_duplicates import run_drain
from tests.truth import valid_events

BASE = 1_763_800_000_000


def entries(n: int, first: int = 0) -> list[Accepted]:
    raw = [
        (
            f"{BASE + i}-{i % 3}".encode(),
            {b"event": json.dumps({"type": "page_view", "site": "l.example", "ts": BASE + i, "path": "/"}).encode()},
        )
        for i in range(first, first + n)
    ]
    decoded = decode_batch(raw, now_ms=BASE + 10_000_000)
    assert not decoded.rejected
    return decoded.accepted


@pytest.fixture
def sinks(database_url: str, schema: str, stream: str) -> Iterator[tuple[PostgresSink, PostgresSink]]:
    first = PostgresSink(database_url, schema)
    first.register_streams([stream])
    second = first.twin()
    yield first, second
    first.close()
    second.close()


def claim_in_thread(
    sink: PostgresSink, batch: dict[str, list[Accepted]], read_new: dict[str, list[bytes]] | None = None
) -> dict[str, Any]:
    """Start a transaction claiming ``batch`` in a thread; commits when the claim returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        with sink.transaction() as tx:
            out["claim"] = tx.claim(batch, read_new=read_new)

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def waiting_on_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("ranges", [True, False], ids=["read-new", "redelivered"])
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_second_claim_waits_for_the_batch_in_flight(sinks, database_url, stream, outcome, ranges) -> None:
    """One transaction claims 50 entries and stays open (a batch whose COMMIT is still on its
    way over a lost connection); another claims 30 of them plus 10 never seen (the retry of a
    daemon that took the connection for dead, or a second `>` read after a failover) and waits
    on the ledger. If the first commits, the second skips the 30; if it rolls back, the second
    counts all 40. Both as ranges (read with `>`) and entry by entry (redeliveries)."""
    first, second = sinks
    batch = entries(50)
    again = batch[20:] + entries(10, first=50)
    read_new = {stream: []} if ranges else None
    with pytest.raises(RuntimeError) if outcome == "rollback" else nullcontext(), first.transaction() as tx:
        assert len(tx.claim({stream: batch}, read_new=read_new).counted) == 50
        late = claim_in_thread(second, {stream: again}, read_new)
        wait_for(lambda: waiting_on_lock(database_url), 30, "the second claim to wait on the ledger")
        assert late["thread"].is_alive()
        if outcome == "rollback":
            raise RuntimeError("the first transaction fails")
    late["thread"].join(30)
    claim: Claim = late["claim"]
    if outcome == "commit":
        assert (len(claim.counted), claim.duplicates) == (10, 30)
        assert {a.entry_id for a in claim.counted} == {a.entry_id for a in again[30:]}
        assert claim.repeats, "entries applied before without a capped fold repeat what was counted"
    else:
        assert (len(claim.counted), claim.duplicates) == (40, 0)


def test_an_entry_twice_in_one_batch_counts_once(sinks, stream) -> None:
    first, _ = sinks
    batch = entries(5)
    with first.transaction() as tx:
        claim = tx.claim({stream: [*batch, batch[2]]})
    assert (len(claim.counted), claim.duplicates) == (5, 1)


def test_entries_applied_before_are_skipped_and_a_capped_one_is_no_plain_repeat(
    sinks, database_url, schema, stream
) -> None:
    """Entries already in the ledger are skipped; one recorded as folded with a capped value
    is not taken for a plain repeat (its sums cannot be taken back, the batch is folded again)."""
    first, _ = sinks
    batch = entries(6)
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        (sid,) = conn.execute("SELECT id FROM streams WHERE name = %s", (stream,)).fetchone()  # type: ignore[misc]
        for i, capped in ((1, False), (3, False), (5, True)):
            key = entry_key(batch[i].entry_id)
            conn.execute(
                "INSERT INTO applied_ranges (stream_id, ids, capped) VALUES (%s, numrange(%s, %s, '[]'), %s)",
                (sid, key, key, capped),
            )
    with first.transaction() as tx:
        plain = tx.claim({stream: batch[:5]})
    assert (len(plain.counted), plain.duplicates, plain.repeats) == (3, 2, True)
    with first.transaction() as tx:
        capped = tx.claim({stream: batch})
    assert (len(capped.counted), capped.duplicates, capped.repeats) == (0, 6, False)


def test_a_group_rewound_to_the_start_counts_nothing_twice(make_settings, schema, r, stream, tmp_path) -> None:
    """`XGROUP SETID … 0` after a drain: the group hands every entry out again as a first
    delivery; the ledger rows of the first run recognise every valid one."""
    from streamproc.dev.synth import Generator, produce

    sent = list(Generator(seed=5, days=1, bad_ratio=0.01).entries(3000))
    produce(r, stream, sent)
    settings = make_settings(batch_size=400)
    first = run_drain(settings, tmp_path)
    assert sum(b["ok"] for b in first) > 2900
    r.xgroup_setid(stream, "g", "0")
    second = run_drain(settings, tmp_path)
    dead = sum(b["dead_lettered"] for b in first)
    assert dead > 0
    # Every valid entry is skipped, and no malformed one is dead-lettered a second time
    # (`<stream>:dlq:ids` remembers them: test_deadletters.py).
    assert [sum(b[k] for b in second) for k in ("ok", "dead_lettered", "duplicates")] == [0, 0, len(sent) - dead]
    assert_totals(settings, sent)


def ledger_covers(conn: psycopg.Connection[Any], entry_ids: list[bytes]) -> int:
    """How many of ``entry_ids`` some ledger row covers (``conn`` on the test's schema)."""
    keys = "{" + ",".join(str(entry_key(i)) for i in entry_ids) + "}"
    row = conn.execute(
        "SELECT count(*)::int FROM unnest(%s::numeric[]) AS k(key)"
        " WHERE EXISTS (SELECT 1 FROM applied_ranges a WHERE a.ids @> k.key)",
        (keys,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def ledger_rows(database_url: str, schema: str) -> list[tuple[int, int]]:
    """The ledger's rows as (first key, last key), in order."""
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        rows = conn.execute("SELECT lower(ids), upper(ids) FROM applied_ranges ORDER BY lower(ids)").fetchall()
    return [(int(lo), int(hi)) for lo, hi in rows]


def test_a_batch_read_with_gt_is_one_row_split_at_dead_lettered_entries(sinks, database_url, schema, stream) -> None:
    """A `>` read of 10 entries whose 5th was dead-lettered is claimed as two ranges that leave
    the 5th out: if it comes back (a redelivery) and is valid then, it is counted, once."""
    first, _ = sinks
    batch = entries(10)
    with first.transaction() as tx:
        claim = tx.claim({stream: batch[:4] + batch[5:]}, read_new={stream: [batch[4].entry_id]})
    assert (len(claim.counted), claim.duplicates) == (9, 0)
    keys = [entry_key(a.entry_id) for a in batch]
    assert ledger_rows(database_url, schema) == [(keys[0], keys[3]), (keys[5], keys[9])]
    with first.transaction() as tx:
        again = tx.claim({stream: batch})  # redelivered: entry by entry
    assert (len(again.counted), again.duplicates) == (1, 9)
    assert again.counted[0].entry_id == batch[4].entry_id
    assert first.covered(stream, [a.entry_id for a in batch]) == 10


def test_a_range_overlapping_the_ledger_counts_exactly_the_entries_nobody_covers(sinks, stream) -> None:
    """Entries 0-9 went as a range, 15 alone (a reclaim); a `>` read of 5-19 (after a group
    rewind) overlaps both: it falls back to single entries and counts 10-14 and 16-19."""
    first, _ = sinks
    batch = entries(20)
    with first.transaction() as tx:
        tx.claim({stream: batch[:10]}, read_new={stream: []})
    with first.transaction() as tx:
        tx.claim({stream: [batch[15]]})
    with first.transaction() as tx:
        claim = tx.claim({stream: batch[5:]}, read_new={stream: []})
    assert sorted(a.entry_id for a in claim.counted) == sorted(a.entry_id for a in batch[10:15] + batch[16:])
    assert claim.duplicates == 6 and claim.repeats
    assert first.covered(stream, [a.entry_id for a in batch]) == 20


def test_entry_keys_are_exact_for_every_id_redis_accepts() -> None:
    """ms and seq are unsigned 64-bit in Redis: the key keeps both, and orders as Redis does."""
    top = 2**64 - 1
    assert entry_key(f"{top}-{top}".encode()) == top * 2**64 + top
    assert entry_key(b"5-18446744073709551615") < entry_key(b"6-0")


def test_a_group_rewound_while_a_batch_commits_counts_nothing_twice(sinks, database_url, r, stream) -> None:
    """Consumer A reads 300 entries with `>` and its transaction stays open; the group is rewound
    (`XGROUP SETID` to the start, as a failover to a replica that missed the last reads would)
    and consumer B reads the first 500 with `>`. B's claim waits for A's; when A commits, B
    counts the 200 A did not hold and skips the 300 it did, and the ledger covers each of the
    500 entries once."""
    first, second = sinks
    now_ms = int(time.time() * 1000)  # events as old as their entries (max_event_age_days)
    payload = {"type": "page_view", "site": "l.example", "path": "/"}
    for i in range(500):
        r.xadd(stream, {"event": json.dumps(dict(payload, ts=now_ms + i))})
    r.xgroup_create(stream, "g", id="0")

    def read(consumer: str, count: int) -> list[Accepted]:
        reply: Any = r.xreadgroup("g", consumer, {stream: ">"}, count=count)
        decoded = decode_batch(reply[0][1], now_ms=now_ms + 3_600_000)
        assert not decoded.rejected
        return decoded.accepted

    batch_a = read("a", 300)
    with first.transaction() as tx:
        assert len(tx.claim({stream: batch_a}, read_new={stream: []}).counted) == 300
        r.xgroup_setid(stream, "g", "0")
        batch_b = read("b", 500)
        assert [a.entry_id for a in batch_b[:300]] == [a.entry_id for a in batch_a]
        late = claim_in_thread(second, {stream: batch_b}, {stream: []})
        wait_for(lambda: waiting_on_lock(database_url), 30, "B's claim to wait on A's")
    late["thread"].join(30)
    claim: Claim = late["claim"]
    assert (len(claim.counted), claim.duplicates) == (200, 300)
    assert {a.entry_id for a in claim.counted} == {a.entry_id for a in batch_b[300:]}
    assert first.covered(stream, [a.entry_id for a in batch_b]) == 500


def in_process_worker(settings: Any) -> Any:
    """A daemon's worker in this process, started (groups, ledger streams) but not looping: the
    test calls its steps - read, prepare, finish - by hand, in the order it chooses."""
    from streamproc.daemon.worker import Worker
    from streamproc.postgres.sink import PostgresSink as Sink
    from streamproc.redis.source import RedisSource

    worker = Worker(
        settings, RedisSource.from_settings(settings), Sink(settings.database_url, settings.db_schema), drain=True
    )
    worker.start()
    return worker


def read_ids(batch: Any, stream: str) -> list[bytes]:
    return [eid for eid, _ in batch.entries.get(stream, [])]


def test_interleaved_reads_of_two_workers_each_claim_their_own_range(
    make_settings, schema, r, stream, database_url
) -> None:
    """Worker A reads 40 entries with `>`, worker B the next 40, A the 40 after: A's two reads
    hold B's entries between them. A commits its second read, then its first; B commits last.
    Each read is claimed as its own ranges (split at dead-lettered entries), never one range
    over two reads of a worker, so B's batch counts all its valid entries: nothing lost. Then
    a third worker reads all 120 again (a rewound group) and counts none: nothing doubled. The
    totals equal the truth and every ledger row lies inside one read."""
    from streamproc.dev.synth import Generator, produce

    sent = list(Generator(seed=16, days=1, bad_ratio=0.05).entries(120))
    produce(r, stream, sent)
    r.xgroup_create(stream, "g", id="0")
    a = in_process_worker(make_settings(consumer="a", batch_size=40, enrich=False))
    b = in_process_worker(make_settings(consumer="b", batch_size=40, enrich=False))
    try:
        a1, b1, a2 = a.read(), b.read(), a.read()
        reads = [read_ids(x, stream) for x in (a1, b1, a2)]
        assert [len(ids) for ids in reads] == [40, 40, 40] and reads[0][-1] < reads[1][0] < reads[2][0]
        results = [a.finish(a.prepare(a2)), a.finish(a.prepare(a1)), b.finish(b.prepare(b1))]
        assert sum(x.dead_lettered for x in results) == sum(1 for e in sent if e.event is None) > 0
        assert sum(x.ok for x in results) == len(valid_events(sent))  # B's read too: nothing lost
        by_key = {entry_key(i): n for n, ids in enumerate(reads) for i in ids}
        for lo, hi in ledger_rows(database_url, schema):
            assert by_key[lo] == by_key[hi], "a ledger row spans two reads"
        r.xgroup_setid(stream, "g", "0")
        c = in_process_worker(make_settings(consumer="c", batch_size=200, enrich=False))
        again = c.finish(c.prepare(c.read()))
        c.close_sinks()
        assert again.ok == 0
    finally:
        a.close_sinks()
        b.close_sinks()
    assert_totals(make_settings(enrich=False), sent)


def test_a_read_bisected_after_a_rejected_entry_covers_only_what_it_counted(
    make_settings, schema, r, stream, database_url
) -> None:
    """Worker A's `>` read of 20 holds a page view Postgres refuses (its daily counter is at the
    bigint maximum); worker B's read of the next 20 sits between A's reads. A's batch is
    bisected, its parts claimed entry by entry: the ledger covers the 19 A counted, not the
    refused one (dead-lettered) nor any of B's, and B then counts all 20: nothing lost."""
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        conn.execute("INSERT INTO pageviews_daily VALUES ('l.example', '2025-11-22', '/full', 9223372036854775807)")
    ids = [
        r.xadd(
            stream,
            {"event": json.dumps({"type": "page_view", "site": "l.example", "ts": BASE + n, "path": path})},
        )
        for n, path in ((n, "/full" if n == 7 else f"/p{n % 3}") for n in range(40))
    ]
    r.xgroup_create(stream, "g", id="0")
    a = in_process_worker(make_settings(consumer="a", batch_size=20, enrich=False))
    b = in_process_worker(make_settings(consumer="b", batch_size=20, enrich=False))
    try:
        a1, b1 = a.read(), b.read()
        first = a.finish(a.prepare(a1))
        assert (first.ok, first.dead_lettered) == (19, 1)
        with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
            assert ledger_covers(conn, ids[:20]) == 19 and ledger_covers(conn, [ids[7]]) == 0
            assert ledger_covers(conn, ids[20:]) == 0
        second = b.finish(b.prepare(b1))
        assert (second.ok, second.duplicates) == (20, 0)
    finally:
        a.close_sinks()
        b.close_sinks()
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        row = conn.execute("SELECT sum(views)::int FROM pageviews_daily WHERE path <> '/full'").fetchone()
    assert row == (39,)


def test_prune_forgets_ranges_and_producer_ids_older_than_the_floor(sinks, database_url, schema, stream) -> None:
    """Two `>` reads of 10 entries each carrying a producer id, an hour apart; pruning at a floor
    between them deletes the first read's range and producer ids and keeps the second's, which
    still count as applied."""
    first, _ = sinks

    def read(at_ms: int, tag: str) -> list[Accepted]:
        raw = [
            (
                f"{at_ms + i}-0".encode(),
                {
                    b"event": json.dumps(
                        {"type": "page_view", "site": "l.example", "ts": at_ms + i, "path": "/", "id": f"{tag}{i}"}
                    ).encode()
                },
            )
            for i in range(10)
        ]
        return decode_batch(raw, now_ms=at_ms + 10_000_000).accepted

    old, new = read(BASE, "o"), read(BASE + 3_600_000, "n")
    for batch in (old, new):
        with first.transaction() as tx:
            assert len(tx.claim({stream: batch}, read_new={stream: []}).counted) == 10
    assert first.prune_ledger({stream: BASE + 1_800_000}) == 1 + 10  # one range, ten producer ids
    assert first.covered(stream, [a.entry_id for a in old + new]) == 10
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        assert conn.execute("SELECT count(*)::int FROM producer_ids").fetchone() == (10,)
    with first.transaction() as tx:
        again = tx.claim({stream: new}, read_new={stream: []})
    assert (len(again.counted), again.duplicates) == (0, 10)
