"""Server-side sessions, the Postgres half (docs/sessions.md).

Inside a batch's transaction, after the ledger decided which entries count:

1. lock each visitor of the batch's sessionless events (``pg_advisory_xact_lock``
   on the visitor hash, in ascending order, held until COMMIT): two workers never
   sessionise the same visitor at once, and no one reads runs another is changing;
2. read the visitor's stored runs near the new events (``visitor_sessions``);
3. merge (:func:`streamproc.core.sessionize.merge`), write the changed runs back and,
   for runs that absorbed others, move the absorbed runs' ``sessions`` and
   ``sessions_daily`` rows into the survivor;
4. hand the runs' ``sessions`` and ``sessions_daily`` rows back, to be written with
   the batch's other rollups.

Everything is in the batch's transaction: a crash or a retry leaves no trace, and a
redelivered entry never reaches step 1 (the ledger skipped it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import psycopg

from streamproc.core import rollups as R
from streamproc.core.sessionize import Merged, Point, Run, VisitorKey, merge
from streamproc.core.wire import array_literal

DAY_MS: Final = 86_400_000

_LOCK: Final = "SELECT pg_advisory_xact_lock(k) FROM unnest(%t::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i"
_RUNS: Final = (
    "SELECT v.site, v.visitor, v.session, v.first_ms, v.last_ms FROM visitor_sessions v"
    " JOIN unnest(%t::text[], %t::bigint[], %t::bigint[], %t::bigint[]) AS k(s, vis, lo, hi)"
    " ON v.site = k.s AND v.visitor = k.vis AND v.last_ms >= k.lo AND v.first_ms <= k.hi"
)
_SAVE: Final = (
    "INSERT INTO visitor_sessions (site, visitor, session, first_ms, last_ms)"
    " SELECT * FROM unnest(%t::text[], %t::bigint[], %t::bigint[], %t::bigint[], %t::bigint[])"
    " ON CONFLICT (site, visitor, session) DO UPDATE SET first_ms = EXCLUDED.first_ms, last_ms = EXCLUDED.last_ms"
)
_FORGET: Final = (
    "DELETE FROM visitor_sessions v USING unnest(%t::text[], %t::bigint[], %t::bigint[]) AS k(s, vis, x)"
    " WHERE v.site = k.s AND v.visitor = k.vis AND v.session = k.x"
)
_TAKE_SESSIONS: Final = (
    "DELETE FROM sessions d USING unnest(%t::text[], %t::bigint[]) AS k(s, x)"
    " WHERE d.site = k.s AND d.session = k.x RETURNING d.site, d.session, d.pageviews, d.events"
)
_TAKE_DAYS: Final = (
    "DELETE FROM sessions_daily d USING unnest(%t::text[], %t::bigint[], %t::bigint[], %t::bigint[]) AS k(s, x, lo, hi)"
    " WHERE d.site = k.s AND d.session = k.x"
    " AND d.day BETWEEN DATE '1970-01-01' + k.lo::integer AND DATE '1970-01-01' + k.hi::integer"
    " RETURNING d.site, d.day - DATE '1970-01-01', d.session"
)


class Derived:
    """The rows a batch's derived sessions add to the ``sessions`` and ``sessions_daily``
    (or ``sessions_daily_hll``) shards, and what happened, for the metrics."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[Any, ...], list[Any]] = {}  # (site, session) -> [first, last, pageviews, events]
        self.days: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # (site, day, session) -> ()
        self.started = 0
        self.merged = 0

    def into(self, shards: Mapping[str, R.Shard], approximate: bool) -> dict[str, R.Shard]:
        """Copies of ``shards`` with these rows added (``shards`` is left as it was: a retried
        transaction starts again from it). Derived ids never equal a producer session's."""
        if not self.sessions:
            return dict(shards)
        out = dict(shards)
        s = shards[R.SESSIONS.table]
        out[R.SESSIONS.table] = R.Shard(s.rollup, {**s.rows, **self.sessions}, s.members)
        daily = R.SITE_SESSIONS_HLL if approximate else R.SITE_SESSIONS
        d = shards[daily.table]
        out[daily.table] = R.Shard(d.rollup, d.rows, {**d.members, **self.days})
        return out


def derive(
    conn: psycopg.Connection[Any], points: Mapping[VisitorKey, list[Point]], gap_ms: int, approximate: bool
) -> Derived:
    """Steps 1 to 3 for one batch's sessionless events, grouped by visitor (see the module)."""
    out = Derived()
    if not points:
        return out
    keys = sorted(points)
    bounds = [(min(p[0] for p in points[k]) - gap_ms, max(p[0] for p in points[k]) + gap_ms) for k in keys]
    with conn.pipeline():  # one round trip; the server still runs the read after the locks
        conn.execute(_LOCK, (array_literal(sorted({v for _, v in keys}), text=False),))
        cur = conn.execute(
            _RUNS,
            (
                array_literal([s for s, _ in keys], text=True),
                array_literal([v for _, v in keys], text=False),
                array_literal([lo for lo, _ in bounds], text=False),
                array_literal([hi for _, hi in bounds], text=False),
            ),
        )
    rows = cur.fetchall()
    runs: dict[VisitorKey, list[Run]] = {}
    for site, visitor, session, first_ms, last_ms in rows:
        runs.setdefault((site, visitor), []).append(Run(session, first_ms, last_ms))
    plans = [(key, m) for key in keys for m in merge(key[0], key[1], runs.get(key, []), points[key], gap_ms)]
    _save(conn, [(key, m) for key, m in plans if m.changed])
    absorbed = [(key, m, r) for key, m in plans for r in m.absorbed]
    taken = _take(conn, absorbed, approximate) if absorbed else ({}, {})
    for (site, _visitor), m in plans:
        pageviews = sum(1 for _, pv in m.points if pv)
        events = len(m.points)
        for r in m.absorbed:
            pv, ev = taken[0].get((site, r.session), (0, 0))
            pageviews += pv
            events += ev
        out.sessions[(site, m.session)] = [m.first_ms, m.last_ms, pageviews, events]
        for ts, pv in m.points:
            if pv:
                out.days[(site, ts // DAY_MS, m.session)] = ()
        for day in taken[1].get((site, m.session), ()):
            out.days[(site, day, m.session)] = ()
        out.started += m.kept is None
        out.merged += len(m.absorbed)
    return out


def _save(conn: psycopg.Connection[Any], plans: list[tuple[VisitorKey, Merged]]) -> None:
    if not plans:
        return
    plans.sort(key=lambda p: (p[0], p[1].session))  # key order, like every other write
    conn.execute(
        _SAVE,
        tuple(
            array_literal(column, text=i == 0)
            for i, column in enumerate(
                zip(*((k[0], k[1], m.session, m.first_ms, m.last_ms) for k, m in plans), strict=True)
            )
        ),
    )


def _take(
    conn: psycopg.Connection[Any], absorbed: list[tuple[VisitorKey, Merged, Run]], approximate: bool
) -> tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, int], list[int]]]:
    """Remove the absorbed runs (state, ``sessions`` rows and, with exact sets, their
    ``sessions_daily`` rows); returns their counts and their days, keyed by the survivor."""
    absorbed.sort(key=lambda a: (a[0], a[2].session))
    sites = array_literal([k[0] for k, _, _ in absorbed], text=True)
    ids = array_literal([r.session for _, _, r in absorbed], text=False)
    conn.execute(_FORGET, (sites, array_literal([k[1] for k, _, _ in absorbed], text=False), ids))
    survivor = {(k[0], r.session): m.session for k, m, r in absorbed}
    counts: dict[tuple[str, int], tuple[int, int]] = {}
    for site, session, pageviews, events in conn.execute(_TAKE_SESSIONS, (sites, ids)).fetchall():
        counts[(site, session)] = (int(pageviews), int(events))
    days: dict[tuple[str, int], list[int]] = {}
    if not approximate:  # a sketch cannot forget a member: see docs/sessions.md
        lo = array_literal([r.first_ms // DAY_MS for _, _, r in absorbed], text=False)
        hi = array_literal([r.last_ms // DAY_MS for _, _, r in absorbed], text=False)
        for site, day, session in conn.execute(_TAKE_DAYS, (sites, ids, lo, hi)).fetchall():
            days.setdefault((site, survivor[(site, session)]), []).append(int(day))
    return counts, days


def prune(conn: psycopg.Connection[Any], before_ms: int) -> int:
    """Forget runs whose last event is older than ``before_ms``; returns how many."""
    return conn.execute("DELETE FROM visitor_sessions WHERE last_ms < %s", (before_ms,)).rowcount
