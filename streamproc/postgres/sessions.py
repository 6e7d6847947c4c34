"""Server-side sessions, the Postgres half (docs/sessions.md).

Inside a batch's transaction, after the ledger decided which entries count:

1. give each visitor of the batch's sessionless events that has no ``visitor_runs`` row
   one (``INSERT ... ON CONFLICT DO NOTHING`` in key order, its runs merged from none),
   then lock every other visitor's row (``SELECT ... FOR UPDATE`` in key order, held until
   COMMIT) and read its runs (a row the INSERT created is this transaction's own until
   COMMIT: nobody else can lock it, and its runs are the ones just written): two workers
   never sessionise the same visitor at once, none merges stale runs, and row locks are
   taken in one global key order (creating after locking could take a lower key after a
   higher one, and deadlock);
2. merge (:func:`streamproc.core.sessionize.merge`) and write each visitor's runs back
   (one row per visitor); for runs that absorbed others, move the absorbed runs'
   ``sessions`` and ``sessions_daily`` rows into the survivor;
3. hand the runs' ``sessions`` and ``sessions_daily`` rows back, to be written with
   the batch's other rollups.

Everything is in the batch's transaction: a crash or a retry leaves no trace, and a
redelivered entry never reaches step 1 (the ledger skipped it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import psycopg
import psycopg.errors

from streamproc.core import rollups as R
from streamproc.core.sessionize import Merged, Point, Run, VisitorKey, merge
from streamproc.core.wire import array_literal

DAY_MS: Final = 86_400_000

_LOCK_RUNS: Final = (
    "SELECT v.site, v.visitor, v.sessions, v.firsts, v.lasts FROM visitor_runs v"
    " JOIN unnest(%t::text[], %t::bigint[]) AS k(s, vis) ON v.site = k.s AND v.visitor = k.vis"
    " ORDER BY v.site, v.visitor FOR UPDATE OF v"
)
_COLUMNS: Final = "%t::text[], %t::bigint[], %t::text[], %t::text[], %t::text[], %t::bigint[]"
_CREATE: Final = (
    "INSERT INTO visitor_runs (site, visitor, sessions, firsts, lasts, last_ms)"
    f" SELECT s, vis, x::bigint[], f::bigint[], l::bigint[], m FROM unnest({_COLUMNS}) AS t(s, vis, x, f, l, m)"
    " ORDER BY s, vis ON CONFLICT (site, visitor) DO NOTHING RETURNING site, visitor"
)
_UPDATE: Final = (
    "UPDATE visitor_runs v SET sessions = t.x::bigint[], firsts = t.f::bigint[], lasts = t.l::bigint[], last_ms = t.m"
    f" FROM unnest({_COLUMNS}) AS t(s, vis, x, f, l, m) WHERE v.site = t.s AND v.visitor = t.vis"
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
        if not self.sessions and not self.days:
            return dict(shards)
        out = dict(shards)
        s = shards[R.SESSIONS.table]
        out[R.SESSIONS.table] = R.Shard(s.rollup, {**s.rows, **self.sessions}, s.members)
        daily = R.SITE_SESSIONS_HLL if approximate else R.SITE_SESSIONS
        d = shards[daily.table]
        out[daily.table] = R.Shard(d.rollup, d.rows, {**d.members, **self.days})
        return out


def derive(
    conn: psycopg.Connection[Any],
    points: Mapping[VisitorKey, list[Point]],
    gap_ms: int,
    approximate: bool,
    keep_from_ms: int = 0,
) -> Derived:
    """Steps 1 to 3 for one batch's sessionless events, grouped by visitor (see the module).
    Runs whose last event is before ``keep_from_ms`` are dropped from the rows written."""
    out = Derived()
    if not points:
        return out
    keys = sorted(points)
    # Every row lock in key order, like every other write: first create the rows of the
    # visitors not seen yet (INSERT ... ON CONFLICT DO NOTHING in key order, as if they had
    # no runs), then lock the others' rows in key order and read them. Locking the
    # stored rows before creating the missing ones would take a lower key after a higher
    # one whenever a visitor's row appears meanwhile, and deadlock with a batch in order.
    fresh = {k: _plan(k, [], points[k], gap_ms) for k in keys}
    created = _write(conn, _CREATE, [(k, fresh[k], []) for k in keys], keep_from_ms, returning=True)
    old = [k for k in keys if k not in created]
    stored = _lock(conn, old) if old else {}
    if len(stored) < len(old):  # a prune deleted one meanwhile: start the batch over
        raise psycopg.errors.SerializationFailure("visitor_runs rows deleted while a batch created them")
    plans = fresh
    for k in old:
        plans[k] = _plan(k, stored[k], points[k], gap_ms)
    changed = [k for k in old if any(m.changed for m in plans[k])]
    _write(conn, _UPDATE, [(k, plans[k], stored[k]) for k in changed], keep_from_ms)
    absorbed = [(k, m, r) for k in keys for m in plans[k] for r in m.absorbed]
    taken = take_absorbed(conn, absorbed, approximate) if absorbed else ({}, {})
    for key in keys:
        add_runs(out, key[0], plans[key], taken)
    return out


Taken = tuple[dict[tuple[str, int], tuple[int, int]], dict[tuple[str, int], list[int]]]


def add_runs(out: Derived, site: str, merged: list[Merged], taken: Taken, skip: int | None = None) -> None:
    """Add the ``sessions`` and ``sessions_daily`` rows of one owner's merged runs to ``out``:
    each run's span, its new points' page views and events plus those ``taken`` from the runs
    it absorbed, and its page-view days. ``skip``: a run whose ``sessions`` row is already
    written whole (a producer session's anchor created by this batch): its days only."""
    days = out.days
    for m in merged:
        session = m.session
        pageviews = 0
        for ts, is_view in m.points:
            if is_view:
                pageviews += 1
                days[(site, ts // DAY_MS, session)] = ()
        events = len(m.points)
        for r in m.absorbed:
            pv, ev = taken[0].get((site, r.session), (0, 0))
            pageviews += pv
            events += ev
        if session != skip:
            out.sessions[(site, session)] = [m.first_ms, m.last_ms, pageviews, events]
        for day in taken[1].get((site, session), ()):
            days[(site, day, session)] = ()
        out.started += m.kept is None
        out.merged += len(m.absorbed)


def _lock(conn: psycopg.Connection[Any], keys: list[VisitorKey]) -> dict[VisitorKey, list[Run]]:
    """Lock the stored rows of ``keys`` (sorted; in key order, like every other write) and
    read their runs."""
    rows = conn.execute(
        _LOCK_RUNS, (array_literal([s for s, _ in keys], text=True), array_literal([v for _, v in keys], text=False))
    ).fetchall()
    return {
        (site, visitor): [Run(x, f, last) for x, f, last in zip(sessions, firsts, lasts, strict=True)]
        for site, visitor, sessions, firsts, lasts in rows
    }


def _plan(key: VisitorKey, runs: list[Run], points: list[Point], gap_ms: int) -> list[Merged]:
    return merge(key[0], key[1], runs, points, gap_ms)


def _write(
    conn: psycopg.Connection[Any],
    statement: str,
    rows: list[tuple[VisitorKey, list[Merged], list[Run]]],
    keep_from_ms: int,
    returning: bool = False,
) -> set[VisitorKey]:
    """Write each visitor's runs after the merge: its stored runs minus the absorbed and the
    re-planned ones, plus the merged ones, without those that ended before ``keep_from_ms``."""
    if not rows:
        return set()
    sites: list[str] = []
    visitors: list[int] = []
    ids: list[str] = []
    firsts: list[str] = []
    lasts: list[str] = []
    last_ms: list[int] = []
    for (site, visitor), merged, runs in rows:
        if not runs and len(merged) == 1:  # the usual row: one run, new (kept whatever its age)
            m = merged[0]
            sites.append(site)
            visitors.append(visitor)
            ids.append(f"{{{m.session}}}")
            firsts.append(f"{{{m.first_ms}}}")
            lasts.append(f"{{{m.last_ms}}}")
            last_ms.append(m.last_ms)
            continue
        fresh = [Run(m.session, m.first_ms, m.last_ms) for m in merged]
        if runs:
            gone = {m.kept.session for m in merged if m.kept is not None}
            gone.update(r.session for m in merged for r in m.absorbed)
            fresh = [r for r in runs if r.session not in gone] + fresh
        after = sorted(r for r in fresh if r.last_ms >= keep_from_ms) or [max(fresh, key=_last_ms)]
        sites.append(site)
        visitors.append(visitor)
        ids.append(array_literal([r.session for r in after], text=False))
        firsts.append(array_literal([r.first_ms for r in after], text=False))
        lasts.append(array_literal([r.last_ms for r in after], text=False))
        last_ms.append(max(r.last_ms for r in after))
    params = (
        array_literal(sites, text=True),
        array_literal(visitors, text=False),
        array_literal(ids, text=True),
        array_literal(firsts, text=True),
        array_literal(lasts, text=True),
        array_literal(last_ms, text=False),
    )
    cur = conn.execute(statement, params)
    return {(site, visitor) for site, visitor in cur.fetchall()} if returning else set()


def _last_ms(run: Run) -> int:
    return run.last_ms


def take_absorbed(
    conn: psycopg.Connection[Any], absorbed: list[tuple[VisitorKey, Merged, Run]], approximate: bool
) -> Taken:
    """Remove the absorbed runs' ``sessions`` rows and, with exact sets, their
    ``sessions_daily`` rows; returns their counts and their days, keyed by the survivor."""
    absorbed.sort(key=lambda a: (a[0], a[2].session))
    sites = array_literal([k[0] for k, _, _ in absorbed], text=True)
    ids = array_literal([r.session for _, _, r in absorbed], text=False)
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
    """Forget visitors whose last event is older than ``before_ms``; returns how many."""
    return conn.execute("DELETE FROM visitor_runs WHERE last_ms < %s", (before_ms,)).rowcount
