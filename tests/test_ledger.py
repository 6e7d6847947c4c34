"""The exactly-once ledger on a real Postgres.

Two transactions may hold the same entries at once (a zombie consumer's late batch and the
reclaim that took its entries over, a batch still committing on a lost connection and its
retry, a group rewound or failed over while a batch was in flight): the second must wait for
the first and skip what it committed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import psycopg
import pytest

from streamproc.core.decode import Accepted, decode_batch
from streamproc.postgres.sink import Claim, PostgresSink
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


def claim_in_thread(sink: PostgresSink, batch: dict[str, list[Accepted]]) -> dict[str, Any]:
    """Start a transaction claiming ``batch`` in a thread; commits when the claim returns."""
    out: dict[str, Any] = {}

    def run() -> None:
        with sink.transaction() as tx:
            out["claim"] = tx.claim(batch)

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def waiting_on_lock(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_a_second_claim_waits_for_the_batch_in_flight(sinks, database_url, stream, outcome) -> None:
    """One transaction claims 50 entries and stays open; another claims 30 of them (plus 10 never
    seen) and waits on the ledger's key. If the first commits, the second skips the 30; if it
    rolls back, the second counts all 40."""
    first, second = sinks
    batch = entries(50)
    again = batch[20:] + entries(10, first=50)
    with pytest.raises(RuntimeError) if outcome == "rollback" else nullcontext(), first.transaction() as tx:
        assert len(tx.claim({stream: batch}).counted) == 50
        late = claim_in_thread(second, {stream: again})
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
            ms, seq = batch[i].entry_id.decode().split("-")
            conn.execute(
                "INSERT INTO applied_entries (stream_id, entry_ms, entry_seq, capped) VALUES (%s, %s, %s, %s)",
                (sid, int(ms), int(seq), capped),
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
