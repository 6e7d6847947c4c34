"""Server-side sessions, the pure half: which events need one, and how runs merge.

A visitor's derived sessions are the maximal runs of its events (sorted by time) in
which consecutive events are at most ``gap_ms`` apart (docs/sessions.md). The
Postgres side (:mod:`streamproc.postgres.sessions`) holds each visitor's runs and
calls :func:`merge` with them and a batch's new events under a per-visitor lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from streamproc.core import rollups as R
from streamproc.core.decode import Accepted
from streamproc.core.enrich import Enricher
from streamproc.core.events import Click, PageView
from streamproc.core.fold import DAY_MS, Hasher

VisitorKey = tuple[str, int]  # (site, hashed visitor)
Point = tuple[int, bool]  # (ts in ms, is a page view)
_BROWSER_EVENTS: Final = (PageView, Click)


class Run(NamedTuple):
    """One stored derived session: its id and the times of its first and last event (ms)."""

    session: int
    first_ms: int
    last_ms: int


def session_points(
    items: Iterable[Accepted], hasher: Hasher, enricher: Enricher | None
) -> dict[VisitorKey, list[Point]]:
    """The events that get a derived session, per visitor: those without a ``session`` of
    their own, with a visitor (``visitor``, or ``ip`` and ``ua``), not from a bot.

    The visitor hash is the fold's, so a derived session belongs to the same visitor the
    visitor counts see (an anonymous visitor's hash changes at 00:00 UTC, and so do its
    sessions)."""
    out: dict[VisitorKey, list[Point]] = {}
    for item in items:
        ev = item.event
        if ev.session:
            continue
        kind = type(ev)
        if enricher is not None and kind in _BROWSER_EVENTS and enricher.bot(ev.ua):
            continue
        site, ts = ev.site, item.ts_ms
        if ev.visitor:
            visitor = hasher.visitor(site, ev.visitor)
        elif ev.ip:
            visitor = hasher.anonymous(site, ts // DAY_MS, ev.ip, ev.ua or "")
        else:
            continue
        out.setdefault((site, visitor), []).append((ts, kind is PageView))
    return out


_SESSION_ID: Final = hashlib.blake2b(digest_size=8, person=b"derived")  # copied per id, never updated


def session_id(site: str, visitor: int, first_ms: int) -> int:
    """The id of a run first stored with its first event at ``first_ms`` (64 bits, signed).

    Built from already keyed values (the visitor hash), so it needs no secret of its own."""
    h = _SESSION_ID.copy()
    h.update(f"{site}\0{visitor}\0{first_ms}".encode())
    return int.from_bytes(h.digest(), "big", signed=True)


def producer_session_points(
    items: Iterable[Accepted], hasher: Hasher, enricher: Enricher | None
) -> dict[VisitorKey, list[Point]]:
    """The events that carry a producer's ``session``, per (site, hashed session id), for the
    same run rule: a producer session is cut where ``gap_ms`` passes without one of its events
    (an event from a clock five days behind, or an id reused a month later, starts a new run
    instead of stretching the session over days). Bots' page views and clicks are left out,
    as the fold leaves them out of every session."""
    out: dict[VisitorKey, list[Point]] = {}
    for item in items:
        ev = item.event
        if not ev.session:
            continue
        kind = type(ev)
        if enricher is not None and kind in _BROWSER_EVENTS and enricher.bot(ev.ua):
            continue
        owner = hasher.session(ev.site, ev.session)  # memoised by the hasher
        out.setdefault((ev.site, owner), []).append((item.ts_ms, kind is PageView))
    return out


def without_producer_sessions(shards: Mapping[str, R.Shard], approximate: bool) -> dict[str, R.Shard]:
    """Copies of ``shards`` without the fold's rows keyed by producer session ids (every row of
    ``sessions`` and ``sessions_daily`` a fold writes): their runs replace them. Rows that only
    skipped entries left (set members stay when repeats are taken back) go too. ``shards`` is
    left as it was: a retried transaction starts again from it."""
    out = dict(shards)
    s = shards[R.SESSIONS.table]
    out[R.SESSIONS.table] = R.Shard(s.rollup, {}, s.members)
    daily = R.SITE_SESSIONS_HLL if approximate else R.SITE_SESSIONS
    d = shards[daily.table]
    out[daily.table] = R.Shard(d.rollup, d.rows, {})
    return out


@dataclass
class Merged:
    """One run after a batch: ``session`` (an old run's id, or a new one), its span, the
    old runs it absorbed (their rows move into it), and the batch's points in it."""

    session: int
    first_ms: int
    last_ms: int
    absorbed: list[Run] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    kept: Run | None = None  # the old run whose id it keeps, if any

    @property
    def changed(self) -> bool:
        """Whether its stored row must be written (new, or its span moved)."""
        return self.kept is None or (self.kept.first_ms, self.kept.last_ms) != (self.first_ms, self.last_ms)


def merge(
    site: str, visitor: int, runs: list[Run], points: list[Point], gap_ms: int, anchor: int | None = None
) -> list[Merged]:
    """Merge a visitor's stored ``runs`` (disjoint, each gap between them > ``gap_ms``) with new
    ``points``; returns only the runs that contain new points (the others are untouched).

    Adding points can join runs but never split one, so the result is the run
    decomposition of (events of ``runs``) + ``points`` whatever order batches come in.
    A merged run keeps the id of its earliest old run; a run of new points only gets
    :func:`session_id` of its first point. With an ``anchor`` (a producer session's own
    hash, the id of its first run and its lock): a run that holds the anchor's run keeps
    the anchor's id, and with no stored runs the earliest run gets it."""
    if not runs:
        return _runs_of(site, visitor, points, gap_ms, anchor)
    items: list[tuple[int, int, Run | None, Point | None]] = [(r.first_ms, r.last_ms, r, None) for r in runs]
    items += [(p[0], p[0], None, p) for p in points]
    items.sort(key=lambda i: (i[0], i[1], i[2] is None))
    out: list[Merged] = []
    group: list[tuple[int, int, Run | None, Point | None]] = []
    last = 0
    for item in items:
        if group and item[0] - last > gap_ms:
            _close(site, visitor, group, out, anchor)
            group = []
        last = max(last, item[1]) if group else item[1]
        group.append(item)
    if group:
        _close(site, visitor, group, out, anchor)
    return out


def _close(
    site: str,
    visitor: int,
    group: list[tuple[int, int, Run | None, Point | None]],
    out: list[Merged],
    anchor: int | None,
) -> None:
    new = [p for _, _, _, p in group if p is not None]
    if not new:
        return  # an old run no new point touches
    old = sorted(
        (r for _, _, r, _ in group if r is not None), key=lambda r: (r.session != anchor, r.first_ms, r.session)
    )
    first = min(i[0] for i in group)
    last = max(i[1] for i in group)
    kept = old[0] if old else None
    session = kept.session if kept is not None else session_id(site, visitor, first)
    out.append(Merged(session, first, last, absorbed=old[1:], points=new, kept=kept))


def _ts(point: Point) -> int:
    return point[0]


def _runs_of(site: str, visitor: int, points: list[Point], gap_ms: int, anchor: int | None = None) -> list[Merged]:
    """:func:`merge` of ``points`` with no stored runs (a visitor's first batch, and the plan
    every visitor gets before its row is known to exist): the same runs, the same ids, the
    points in the same order, without the general merge's work."""
    if len(points) == 1:
        ts = points[0][0]
        return [Merged(session_id(site, visitor, ts) if anchor is None else anchor, ts, ts, points=list(points))]
    ordered = sorted(points, key=_ts)  # stable: ties keep their order, as in merge's sort
    out: list[Merged] = []
    start = 0
    for i in range(1, len(ordered)):
        if ordered[i][0] - ordered[i - 1][0] > gap_ms:
            out.append(_new_run(site, visitor, ordered[start:i]))
            start = i
    out.append(_new_run(site, visitor, ordered[start:]))
    if anchor is not None:
        out[0].session = anchor
    return out


def _new_run(site: str, visitor: int, points: list[Point]) -> Merged:
    first = points[0][0]
    return Merged(session_id(site, visitor, first), first, points[-1][0], points=points)
