"""The exactly-once ledger, one row per batch and stream (migration 006), on a real Postgres.

A first delivery (read with ``>``) and a redelivery of the same entries may be in flight at
once (a zombie consumer's late batch and the reclaim that took its entries over): the
redelivery must wait for the first delivery's transaction and skip what it committed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import psycopg
import pytest

from streamproc.decode import Accepted, decode_batch
from streamproc.sink import Claim, PostgresSink
from tests.conftest import wait_for
from tests.test_crash import assert_totals
from tests.test_duplicates import run_drain

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


def claim_in_thread(sink: PostgresSink, batch: dict[str, list[Accepted]], first_delivery: bool) -> dict[str, Any]:
    """Start a transaction claiming ``batch`` in a thread; commits when the claim returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        with sink.transaction() as tx:
            out["claim"] = tx.claim(batch, first_delivery=first_delivery)

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def waiting_on_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_redelivery_waits_for_the_first_delivery_in_flight(sinks, database_url, stream, outcome) -> None:
    """The first delivery claims 50 entries and holds its transaction open; a redelivery of 30 of
    them (plus 10 never seen) blocks on the stream's lock. If the first commits, the redelivery
    skips the 30; if it rolls back, the redelivery counts all 40."""
    first, second = sinks
    batch = entries(50)
    again = batch[20:] + entries(10, first=50)
    with pytest.raises(RuntimeError) if outcome == "rollback" else nullcontext(), first.transaction() as tx:
        assert len(tx.claim({stream: batch}, first_delivery=True).counted) == 50
        late = claim_in_thread(second, {stream: again}, first_delivery=False)
        wait_for(lambda: waiting_on_lock(database_url), 30, "the redelivery to wait on the stream's lock")
        assert late["thread"].is_alive()
        if outcome == "rollback":
            raise RuntimeError("the first delivery's transaction fails")
    late["thread"].join(30)
    claim: Claim = late["claim"]
    if outcome == "commit":
        assert (len(claim.counted), claim.duplicates) == (10, 30)
        assert {a.entry_id for a in claim.counted} == {a.entry_id for a in again[30:]}
        assert claim.repeats, "entries applied before without a capped fold repeat what was counted"
    else:
        assert (len(claim.counted), claim.duplicates) == (40, 0)


def test_two_first_deliveries_do_not_wait_for_each_other(sinks, database_url, stream) -> None:
    """The counterpart: first deliveries share the lock (the group never hands one entry to two
    `>` reads), so two of them in flight at once do not see each other. This is what the
    exclusive lock of a redelivery prevents; without it the same entries would count twice."""
    first, second = sinks
    batch = entries(20)
    with first.transaction() as tx:
        tx.claim({stream: batch}, first_delivery=True)
        other = claim_in_thread(second, {stream: batch}, first_delivery=True)
        other["thread"].join(30)
        assert not other["thread"].is_alive()
    assert len(other["claim"].counted) == 20


def test_rows_of_the_per_entry_ledger_are_still_honoured(sinks, database_url, schema, stream) -> None:
    """Entries applied before migration 006 sit in `applied_entries`: a redelivery of them is
    skipped, and one recorded as capped is not taken for a plain repeat."""
    first, _ = sinks
    batch = entries(6)
    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        (sid,) = conn.execute("SELECT id FROM streams WHERE name = %s", (stream,)).fetchone()  # type: ignore[misc]
        for i, capped in ((1, False), (3, False)):
            ms, seq = batch[i].entry_id.decode().split("-")
            conn.execute(
                "INSERT INTO applied_entries (stream_id, entry_ms, entry_seq, capped) VALUES (%s, %s, %s, %s)",
                (sid, int(ms), int(seq), capped),
            )
    with first.transaction() as tx:
        claim = tx.claim({stream: batch})
    assert (len(claim.counted), claim.duplicates, claim.repeats) == (4, 2, True)
    with first.transaction() as tx:
        again = tx.claim({stream: batch + entries(1, first=6)})
    assert (len(again.counted), again.duplicates) == (1, 6)

    with psycopg.connect(database_url, options=f"-c search_path={schema}", autocommit=True) as conn:
        ms, seq = entries(1, first=7)[0].entry_id.decode().split("-")
        conn.execute(
            "INSERT INTO applied_entries (stream_id, entry_ms, entry_seq, capped) VALUES (%s, %s, %s, true)",
            (sid, int(ms), int(seq)),
        )
    with first.transaction() as tx:
        capped = tx.claim({stream: entries(2, first=7)})
    assert (len(capped.counted), capped.duplicates, capped.repeats) == (1, 1, False)


def test_a_group_rewound_to_the_start_counts_nothing_twice(make_settings, schema, r, stream, tmp_path) -> None:
    """`XGROUP SETID … 0` after a drain: the group hands every entry out again as a first
    delivery; the ledger rows of the first run recognise every valid one."""
    from streamproc.synth import Generator, produce

    sent = list(Generator(seed=5, days=1, bad_ratio=0.01).entries(3000))
    produce(r, stream, sent)
    settings = make_settings(batch_size=400)
    first = run_drain(settings, tmp_path)
    assert sum(b["ok"] for b in first) > 2900
    r.xgroup_setid(stream, "g", "0")
    second = run_drain(settings, tmp_path)
    dead = sum(b["dead_lettered"] for b in first)
    assert dead > 0
    # The malformed entries are reported to the dead-letter stream again (a rewind replays them);
    # every valid one is skipped.
    assert [sum(b[k] for b in second) for k in ("ok", "dead_lettered", "duplicates")] == [0, dead, len(sent) - dead]
    assert_totals(settings, sent)
