"""The pure half of server-side sessions: merging a visitor's stored runs with new events
gives the documented sessions whatever the batches and their order."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.core.sessionize import Run, merge
from tests.sessions_oracle import sessionize

GAP = 1_800_000


def apply_batches(batches: list[list[tuple[int, bool]]], anchor: int | None = None) -> list[tuple[int, int, int, int]]:
    """Feed batches one after another through merge(), keeping the state a database would:
    the runs and each session's (pageviews, events). Returns (first, last, pageviews, events).
    ``anchor``: a producer session's hash, whose run must never be absorbed (its row is the lock)."""
    runs: dict[int, Run] = {}
    counts: dict[int, tuple[int, int]] = {}
    for points in batches:
        for m in merge("s", 7, list(runs.values()), points, GAP, anchor=anchor):
            assert anchor is None or all(r.session != anchor for r in m.absorbed), "the anchor's run is never absorbed"
            pv, ev = sum(1 for _, p in m.points if p), len(m.points)
            for r in m.absorbed:  # the database moves an absorbed session's counts into the survivor
                taken = counts.pop(r.session)
                pv, ev = pv + taken[0], ev + taken[1]
                del runs[r.session]
            old = counts.get(m.session, (0, 0))
            counts[m.session] = (old[0] + pv, old[1] + ev)
            runs[m.session] = Run(m.session, m.first_ms, m.last_ms)
    return sorted((r.first_ms, r.last_ms, *counts[r.session]) for r in runs.values())


points_st = st.lists(st.tuples(st.integers(0, 6 * GAP), st.booleans()), min_size=1, max_size=40)


def oracle_and_stored(
    points: list[tuple[int, bool]], n_batches: int, rnd: random.Random, who: dict[str, str], anchor: int | None
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """The oracle's sessions of ``points`` (events of ``who``: a visitor or a producer session)
    and those stored after applying them in random batches in random order."""
    shuffled = points[:]
    rnd.shuffle(shuffled)
    cuts = sorted(rnd.sample(range(len(shuffled) + 1), min(n_batches - 1, len(shuffled) + 1)))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True) if shuffled[a:b]]
    events = [{"site": "s", **who, "ts": ts, "type": "page_view" if pv else "click"} for ts, pv in points]
    want = [(s.first_ms, s.last_ms, s.pageviews, s.events) for s in sessionize(events, GAP)]
    return sorted(want), apply_batches(batches, anchor)


@settings(max_examples=300, deadline=None)
@given(points_st, st.integers(1, 6), st.randoms(use_true_random=False))
def test_any_batching_and_order_gives_the_documented_sessions(points, n_batches, rnd: random.Random) -> None:
    """Split a visitor's events into batches at random and apply them in random order:
    the stored sessions equal the oracle's (spans, page views, events)."""
    want, got = oracle_and_stored(points, n_batches, rnd, {"visitor": "v"}, None)
    assert got == want


@settings(max_examples=300, deadline=None)
@given(points_st, st.integers(1, 6), st.randoms(use_true_random=False))
def test_a_producer_sessions_anchor_keeps_its_id_and_the_same_sessions(points, n_batches, rnd: random.Random) -> None:
    """With an anchor (a producer session's first run stored under the id's own hash), any
    batching and order gives the same sessions, and the anchor's run is never absorbed."""
    want, got = oracle_and_stored(points, n_batches, rnd, {"session": "x"}, anchor=7)
    assert got == want
    assert merge("s", 7, [], [(5, True), (5 + GAP + 1, True)], GAP, anchor=7)[0].session == 7
    # A run older than the anchor's, then an event joining both: the survivor is the anchor.
    assert apply_batches([[(2 * GAP, True)], [(0, True)], [(GAP, False)]], anchor=7) == [(0, 2 * GAP, 2, 3)]


def test_a_late_event_bridging_two_sessions_merges_them() -> None:
    """Two sessions 50 minutes apart become one when an event between them arrives later."""
    assert len(apply_batches([[(0, True)], [(50 * 60_000, True)]])) == 2
    assert apply_batches([[(0, True)], [(50 * 60_000, True)], [(25 * 60_000, False)]]) == [(0, 50 * 60_000, 2, 3)]


def test_exactly_the_timeout_apart_is_the_same_session() -> None:
    """A gap equal to the timeout continues the session; one millisecond more starts another."""
    assert len(apply_batches([[(0, True), (GAP, True)]])) == 1
    assert len(apply_batches([[(0, True), (GAP + 1, True)]])) == 2
