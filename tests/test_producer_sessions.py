"""Producer sessions cut by the run rule and kept on their anchors (docs/sessions.md, "How a
producer session's runs are kept"), through real Postgres transactions: an id whose first
batch already holds several runs, later batches that bridge them or arrive before them, the
same hashed id on several sites, and two transactions creating the same anchor at once.
Every stored session (span, page views, events, page-view days) is the oracle's."""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Final

import psycopg
import pytest

from streamproc.core import rollups as R
from streamproc.core.fold import DAY_MS
from streamproc.core.sessionize import Point, VisitorKey
from streamproc.postgres.migrate import migrate
from streamproc.postgres.sink import PostgresSink
from tests.conftest import wait_for
from tests.sessions_oracle import sessionize
from tests.test_sessions import stored, waits_on_a_lock

GAP_MS: Final = 1_800_000
Batch = dict[VisitorKey, list[Point]]
Row = tuple[int, int, int, int, frozenset[int]]


def commit(sink: PostgresSink, batch: Batch, approximate: bool = False) -> None:
    """One batch's producer-session points through the daemon's steps: runs, then rollups."""
    with sink.transaction() as tx:
        derived = tx.derive_sessions({}, GAP_MS, approximate, 0, batch)
        tx.write(derived.into(R.new_shards(approximate), approximate))


def expected(site: str, points: dict[int, list[Point]], approximate: bool = False) -> list[Row]:
    events = [
        {"site": site, "session": str(h), "ts": ts, "type": "page_view" if pv else "click"}
        for h, pts in points.items()
        for ts, pv in pts
    ]
    return sorted(
        (s.first_ms, s.last_ms, s.pageviews, s.events, frozenset() if approximate else s.days)
        for s in sessionize(events, GAP_MS)
    )


def batches(rng: random.Random, site: str, points: dict[int, list[Point]], n: int) -> list[Batch]:
    """The ids' points shuffled and cut into at most ``n`` batches."""
    items = [(h, p) for h, pts in points.items() for p in pts]
    rng.shuffle(items)
    cuts = sorted(rng.sample(range(len(items) + 1), min(n - 1, len(items) + 1)))
    out: list[Batch] = []
    for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True):
        batch: Batch = {}
        for h, p in items[a:b]:
            batch.setdefault((site, h), []).append(p)
        if batch:
            out.append(batch)
    return out


@pytest.mark.parametrize("approximate", [False, True], ids=["exact", "approximate"])
def test_any_batching_of_producer_sessions_gives_the_oracles_sessions(
    database_url: str, schema: str, pg: psycopg.Connection[Any], approximate: bool
) -> None:
    """Per site, one to three producer ids (hashes shared across sites), each with pauses
    below, at and just over the timeout and of days, cut into one to five shuffled batches:
    first batches that already hold several runs (an anchor created with other runs), later
    ones before, between or bridging stored runs. The stored sessions equal the oracle's,
    site by site after each, and all together at the end (no site touched another's rows).
    Approximate: the same `sessions` rows (days live in sketches)."""
    if approximate:
        migrate(database_url, schema, approximate=True)
    rng = random.Random(2026)
    start = int(time.time() * 1000) - 4 * DAY_MS
    sink = PostgresSink(database_url, schema)
    sent: dict[str, dict[int, list[Point]]] = {}
    try:
        for i in range(120):
            site = f"p{i}.example"
            points: dict[int, list[Point]] = {}
            for h in rng.sample([1, 2, 3, 10**15, -5], rng.randrange(1, 4)):
                ts = start + rng.randrange(DAY_MS)
                points[h] = []
                for _ in range(rng.randrange(1, 12)):
                    points[h].append((ts, rng.random() < 0.6))
                    ts += rng.choice((rng.randrange(GAP_MS), GAP_MS, GAP_MS + 1, rng.randrange(GAP_MS, 3 * GAP_MS)))
                    ts += DAY_MS // 2 if rng.random() < 0.1 else 0
            for batch in batches(rng, site, points, rng.randrange(1, 9)):
                commit(sink, batch, approximate)
            assert stored(pg, site, approximate) == expected(site, points, approximate), (i, points)
            sent[site] = points
    finally:
        sink.close()
    for site, points in sent.items():
        assert stored(pg, site, approximate) == expected(site, points, approximate), site


@pytest.mark.parametrize("first_commits", [True, False], ids=["commit", "rollback"])
def test_an_anchor_a_concurrent_transaction_creates_is_merged_into_not_recreated(
    database_url: str, schema: str, pg: psycopg.Connection[Any], first_commits: bool
) -> None:
    """A first transaction creates an id's anchor with three runs (two of them in its other-runs
    columns); a second one, with events bridging those runs, waits for it. When the first
    commits, the second locks and merges into what it wrote (one session, as the oracle says);
    when it rolls back, the second creates the anchor itself."""
    t0 = int(time.time() * 1000) - 5 * 3_600_000
    site = "race.example"
    first_batch: Batch = {(site, 5): [(t0, True), (t0 + 2 * GAP_MS, True), (t0 + 4 * GAP_MS, False)]}
    second_batch: Batch = {(site, 5): [(t0 + GAP_MS, False), (t0 + 3 * GAP_MS, True)], (site, 9): [(t0, True)]}
    first, second, observer = (PostgresSink(database_url, schema) for _ in range(3))
    try:
        held = first.transaction()
        tx = held.__enter__()
        tx.write(tx.derive_sessions({}, GAP_MS, False, 0, first_batch).into(R.new_shards(), False))
        second.open()
        pid = second.conn.info.backend_pid
        failed: list[BaseException] = []

        def run_second() -> None:
            try:
                commit(second, second_batch)
            except BaseException as exc:  # handed to the test's thread
                failed.append(exc)

        worker = threading.Thread(target=run_second)
        worker.start()
        wait_for(lambda: waits_on_a_lock(observer, pid), 60, "the second transaction to wait for the new anchor")
        if first_commits:
            held.__exit__(None, None, None)
        else:
            held.__exit__(RuntimeError, RuntimeError("rolled back"), None)
        worker.join(timeout=60)
        assert not worker.is_alive() and not failed, failed
    finally:
        for sink in (first, second, observer):
            sink.close()
    points = {
        5: second_batch[(site, 5)] + (first_batch[(site, 5)] if first_commits else []),
        9: second_batch[(site, 9)],
    }
    assert stored(pg, site) == expected(site, points)
    assert len(expected(site, points)) == (2 if first_commits else 3)
