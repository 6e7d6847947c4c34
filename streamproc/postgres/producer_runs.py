"""Producer sessions cut by the run rule, kept on their own ``sessions`` rows (docs/sessions.md).

A producer session id ``s`` (hashed: ``h``) has runs like a visitor's derived sessions, but
needs no state row of its own: its first run is stored under ``h`` itself, the **anchor**,
and that ``sessions`` row is both the lock that serialises the transactions touching ``s``
and, in ``run_ids``/``run_firsts``/``run_lasts`` (NULL while ``s`` has one run), the list
of its other runs. The anchor's own run is the row's ``first_seen``/``last_seen``.

Inside a batch's transaction, after the derived sessions of sessionless visitors:

1. create the anchors of the batch's ids that have none (``INSERT ... ON CONFLICT DO
   NOTHING RETURNING``, in key order) with their whole figures (span, page views, events,
   other runs): a created anchor is not written again by the rollups;
2. lock the other anchors (``SELECT ... FOR UPDATE``, in key order) and read their runs;
3. merge (:func:`streamproc.core.sessionize.merge`, the anchor's run keeping its id), write
   the other-runs columns of the anchors whose list changed, and move absorbed runs' rows
   into their survivors, as for derived sessions;
4. hand the runs' ``sessions`` and ``sessions_daily`` rows back, to be written with the
   batch's other rollups.

Compared with a ``visitor_runs`` row per id, a new session costs one row instead of two.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import psycopg
import psycopg.errors

from streamproc.core.sessionize import Merged, Point, Run, VisitorKey, merge
from streamproc.core.wire import array_literal
from streamproc.postgres.sessions import Derived, add_runs, take_absorbed

_EPOCH_MS: Final = "TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond'"
_CREATE: Final = (
    "INSERT INTO sessions (site, session, first_seen, last_seen, pageviews, events, run_ids, run_firsts, run_lasts)"
    f" SELECT s, x, {_EPOCH_MS.format('f')}, {_EPOCH_MS.format('l')}, pv, ev, ri::bigint[], rf::bigint[], rl::bigint[]"
    " FROM unnest(%t::text[], %t::bigint[], %t::bigint[], %t::bigint[], %t::bigint[], %t::bigint[],"
    " %t::text[], %t::text[], %t::text[]) AS t(s, x, f, l, pv, ev, ri, rf, rl)"
    " ORDER BY s, x ON CONFLICT (site, session) DO NOTHING RETURNING site, session"
)
_LOCK: Final = (
    "SELECT a.site, a.session, (extract(epoch FROM a.first_seen) * 1000)::bigint,"
    " (extract(epoch FROM a.last_seen) * 1000)::bigint, a.run_ids, a.run_firsts, a.run_lasts FROM sessions a"
    " JOIN unnest(%t::text[], %t::bigint[]) AS k(s, x) ON a.site = k.s AND a.session = k.x"
    " ORDER BY a.site, a.session FOR UPDATE OF a"
)
_UPDATE: Final = (
    "UPDATE sessions a SET run_ids = t.ri::bigint[], run_firsts = t.rf::bigint[], run_lasts = t.rl::bigint[]"
    " FROM unnest(%t::text[], %t::bigint[], %t::text[], %t::text[], %t::text[]) AS t(s, x, ri, rf, rl)"
    " WHERE a.site = t.s AND a.session = t.x"
)


def derive_producer(
    conn: psycopg.Connection[Any],
    points: Mapping[VisitorKey, list[Point]],
    gap_ms: int,
    approximate: bool,
    keep_from_ms: int,
    out: Derived,
) -> None:
    """Steps 1 to 4 for one batch's events that carry a producer session, grouped by
    ``(site, hashed session id)``; the rows to write are added to ``out``. Other runs that
    ended before ``keep_from_ms`` are dropped from an anchor's list when it is written (the
    anchor's own run stays with its row)."""
    if not points:
        return
    keys = sorted(points)
    fresh = {k: merge(k[0], k[1], [], points[k], gap_ms, anchor=k[1]) for k in keys}
    created = _create(conn, keys, fresh, keep_from_ms)
    old = [k for k in keys if k not in created]
    stored = _lock(conn, old) if old else {}
    if len(stored) < len(old):  # a retention prune deleted one meanwhile: start the batch over
        raise psycopg.errors.SerializationFailure("sessions rows deleted while a batch created them")
    plans = fresh
    for k in old:
        plans[k] = merge(k[0], k[1], stored[k], points[k], gap_ms, anchor=k[1])
    _update(conn, [(k, plans[k], stored[k]) for k in old], keep_from_ms)
    absorbed = [(k, m, r) for k in keys for m in plans[k] for r in m.absorbed]
    taken = take_absorbed(conn, absorbed, approximate) if absorbed else ({}, {})
    for key in keys:
        written = key[1] if key in created else None  # the anchor's row holds its figures already
        add_runs(out, key[0], plans[key], taken, skip=written)


def _others(key: VisitorKey, merged: list[Merged], runs: list[Run], keep_from_ms: int) -> list[Run]:
    """The anchor's other runs after the merge: the stored ones no merged run absorbed or
    replaced, plus the merged ones, but the anchor's and those that ended before
    ``keep_from_ms``."""
    gone = {m.kept.session for m in merged if m.kept is not None}
    gone.update(r.session for m in merged for r in m.absorbed)
    fresh = [r for r in runs if r.session not in gone] + [Run(m.session, m.first_ms, m.last_ms) for m in merged]
    return sorted(r for r in fresh if r.session != key[1] and r.last_ms >= keep_from_ms)


def _columns(others: list[Run]) -> tuple[str | None, str | None, str | None]:
    if not others:
        return None, None, None
    return (
        array_literal([r.session for r in others], text=False),
        array_literal([r.first_ms for r in others], text=False),
        array_literal([r.last_ms for r in others], text=False),
    )


def _create(
    conn: psycopg.Connection[Any], keys: list[VisitorKey], plans: dict[VisitorKey, list[Merged]], keep_from_ms: int
) -> set[VisitorKey]:
    sites: list[str] = []
    ids: list[int] = []
    firsts: list[int] = []
    lasts: list[int] = []
    views: list[int] = []
    events: list[int] = []
    others: list[tuple[str | None, str | None, str | None]] = []
    for i, key in enumerate(keys):
        runs = plans[key]
        anchor = runs[0]  # the earliest run holds the anchor's id (merge with anchor=)
        points = anchor.points
        sites.append(key[0])
        ids.append(key[1])
        firsts.append(anchor.first_ms)
        lasts.append(anchor.last_ms)
        views.append(sum(1 for _, is_view in points if is_view))
        events.append(len(points))
        if len(runs) > 1:  # rare: other runs in the id's first batch
            others += [(None, None, None)] * (i - len(others))
            others.append(_columns(_others(key, runs, [], keep_from_ms)))
    params = [
        array_literal(sites, text=True),
        *(array_literal(c, text=False) for c in (ids, firsts, lasts, views, events)),
        # unnest pads shorter arrays with NULLs: with no other runs, three empty arrays
        *(array_literal([o[j] for o in others], text=True) for j in range(3)),
    ]
    return {(site, session) for site, session in conn.execute(_CREATE, params).fetchall()}


def _lock(conn: psycopg.Connection[Any], keys: list[VisitorKey]) -> dict[VisitorKey, list[Run]]:
    """Lock the anchors of ``keys`` (sorted; in key order) and read their runs, the anchor's first."""
    rows = conn.execute(
        _LOCK, (array_literal([s for s, _ in keys], text=True), array_literal([x for _, x in keys], text=False))
    ).fetchall()
    out: dict[VisitorKey, list[Run]] = {}
    for site, session, first_ms, last_ms, ids, firsts, lasts in rows:
        runs = [Run(session, first_ms, last_ms)]
        if ids:
            runs += [Run(x, f, last) for x, f, last in zip(ids, firsts, lasts, strict=True)]
        out[(site, session)] = runs
    return out


def _update(
    conn: psycopg.Connection[Any], rows: list[tuple[VisitorKey, list[Merged], list[Run]]], keep_from_ms: int
) -> None:
    """Write the other-runs columns of the anchors whose list of other runs changed."""
    changed: list[tuple[Any, ...]] = []
    for key, merged, runs in rows:
        others = _others(key, merged, runs, keep_from_ms)
        if others != sorted(r for r in runs[1:]):
            changed.append((key[0], key[1], *_columns(others)))
    if not changed:
        return
    columns = list(zip(*changed, strict=True))
    params = [array_literal(list(c), text=i != 1) for i, c in enumerate(columns)]
    conn.execute(_UPDATE, params)
