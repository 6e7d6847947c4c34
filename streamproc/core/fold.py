"""Fold validated events into rollup shards. Pure: no sockets, no clocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from streamproc.core import rollups as R
from streamproc.core.decode import Accepted
from streamproc.core.enrich import Enricher
from streamproc.core.events import ApiRequest, Click, Conversion, Custom, Event, PageView
from streamproc.core.histogram import bucket_of
from streamproc.core.props import prop_pairs
from streamproc.core.urls import UrlRules

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
GRID: Final = 20  # heatmap cells per axis
DEFAULT_URLS: Final = UrlRules()


HASH_MEMO_SIZE: Final = 32_768


class Hasher:
    """Keyed 64-bit hashes for visitor and session ids (never stored in clear).

    The site is part of the input, so one visitor is not linkable across sites.
    Visitor and session hashes are memoised per ``(site, id)``, each memo emptied when it
    reaches :data:`HASH_MEMO_SIZE` entries (a few MB at most): the fold, the derived
    sessions and the next batches of an active visitor hash it once.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._visitor = hashlib.blake2b(key=secret, digest_size=8, person=b"visitor")
        self._session = hashlib.blake2b(key=secret, digest_size=8, person=b"session")
        self._day_salts: dict[int, hashlib.blake2b] = {}
        self._visitors: dict[tuple[str, str], int] = {}
        self._sessions: dict[tuple[str, str], int] = {}

    def _hash(self, base: hashlib.blake2b, site: str, value: str) -> int:
        h = base.copy()
        h.update(f"{site}\0{value}".encode())  # one update: the same bytes, the same digest
        return int.from_bytes(h.digest(), "big", signed=True)

    def _memoised(self, memo: dict[tuple[str, str], int], base: hashlib.blake2b, site: str, value: str) -> int:
        """``_hash(base, site, value)``, remembered in ``memo`` (emptied at HASH_MEMO_SIZE entries)."""
        key = (site, value)
        hashed = memo.get(key)
        if hashed is None:
            if len(memo) >= HASH_MEMO_SIZE:
                memo.clear()
            hashed = memo[key] = self._hash(base, site, value)
        return hashed

    def visitor(self, site: str, visitor: str) -> int:
        return self._memoised(self._visitors, self._visitor, site, visitor)

    def session(self, site: str, session: str) -> int:
        return self._memoised(self._sessions, self._session, site, session)

    def anonymous(self, site: str, day: int, ip: str, ua: str) -> int:
        """Visitor id for an event that carries an IP address and user agent instead.

        Keyed by a salt that rotates daily and is derived from the secret and the
        event's own day, so a redelivery after midnight hashes the same, and the
        same person is not linkable across days. The IP and user agent are
        never stored.
        """
        base = self._day_salts.get(day)
        if base is None:
            salt = hashlib.blake2b(str(day).encode(), key=self._secret, person=b"daysalt").digest()
            base = self._day_salts[day] = hashlib.blake2b(key=salt, digest_size=8, person=b"ip+ua")
        return self._hash(base, site, f"{ip}\0{ua}")


OVERFLOW: Final = "(other)"
DEFAULT_MAX_KEYS: Final = 10_000
_CAPPED: Final[dict[type, tuple[str, ...]]] = {
    PageView: ("site", "path", "device", "browser", "os", "country", "utm_source", "utm_medium", "utm_campaign"),
    Click: ("site", "path", "selector"),
    ApiRequest: ("site", "method", "route"),
    Conversion: ("site", "name", "currency"),
    Custom: ("site", "name"),
}


class KeyCap:
    """At most ``limit`` distinct values per attribute in one batch; later new values
    fold into the overflow value ``(other)``. A flood of unique paths (or routes,
    selectors, names...) then adds a bounded number of rollup rows per batch."""

    def __init__(self, limit: int = DEFAULT_MAX_KEYS) -> None:
        self.limit = limit
        self.overflowed = 0
        self.capped: set[int] = set()  # id() of the Accepted entries folded with a capped value
        self._seen: dict[str, set[str]] = {}

    def apply(self, ev: Event) -> Event:
        changes: dict[str, str] | None = None
        for name in _CAPPED[type(ev)]:
            value = getattr(ev, name)
            if value is None:
                continue
            seen = self._seen.setdefault(name, set())
            if value in seen:
                continue
            if len(seen) < self.limit:
                seen.add(value)
                continue
            changes = changes or {}
            changes[name] = OVERFLOW
        if changes is None:
            return ev
        self.overflowed += 1
        return msgspec.structs.replace(ev, **changes)

    def value(self, name: str, value: str) -> str:
        """One derived value (not an event attribute, such as a bot's name) under the same cap."""
        seen = self._seen.setdefault(name, set())
        if value in seen:
            return value
        if len(seen) < self.limit:
            seen.add(value)
            return value
        self.overflowed += 1
        return OVERFLOW


# Every event field read below must also be covered by sink.event_digest, which decides when a
# skipped entry repeats a counted one (all fields, `props` included, with `ts` as ts_ms).
def fold(
    events: Iterable[Accepted],
    hasher: Hasher,
    cap: KeyCap | None = None,
    approximate: bool = False,
    enricher: Enricher | None = None,
    urls: UrlRules = DEFAULT_URLS,
) -> dict[str, R.Shard]:
    """Aggregate a batch of accepted events into one shard per rollup (``approximate``:
    unique visitors and sessions go to HyperLogLog rollups instead of exact sets).

    With an ``enricher``, page views and clicks from bots count in ``bots_daily`` only, and
    page views get the device, browser, OS and country they lack from their ``ua`` and
    ``ip`` before the key cap sees them (derived values are capped like sent ones).
    ``urls`` normalises page-view and click paths and referrer hosts (:mod:`streamproc.core.urls`),
    also before the key cap.

    Per batch, not per event: visitor and session hashes are computed once per
    distinct id (:class:`Hasher` memoises them), and the eight dimension counts once per distinct combination of
    dimension values (a *profile*) rather than once per page view."""
    items = events if isinstance(events, list) else list(events)
    cap = cap or KeyCap()
    capping = len(items) > cap.limit  # fewer events than the cap cannot bring a value over it
    shards = R.new_shards(approximate)
    batch = _Batch(shards, approximate, urls)
    normalize = urls.normalize_paths
    s_events = shards[R.EVENTS.table].rows
    s_sessions = shards[R.SESSIONS.table].rows
    s_bots = shards[R.BOTS.table].rows
    s_props = shards[R.EVENT_PROPS.table].rows
    for item in items:
        ev, ts = item.event, item.ts_ms
        if enricher is not None and ev.ua is not None and type(ev) in _BROWSER_EVENTS:
            bot = enricher.bot(ev.ua)
            if bot:
                key = (ev.site, ts // DAY_MS, bot)
                if capping:
                    key = (cap.value("site", ev.site), key[1], cap.value("bot", bot))
                    if OVERFLOW in key:
                        cap.capped.add(id(item))
                R.count_into(s_bots, key)
                continue
            ev = enricher.page_view(ev) if isinstance(ev, PageView) else ev
        if normalize and type(ev) in _BROWSER_EVENTS:
            path = urls.path(ev.path)  # type: ignore[union-attr]  # page views and clicks have one
            if path != ev.path:  # type: ignore[union-attr]
                ev = msgspec.structs.replace(ev, path=path)
        if capping:
            capped = cap.apply(ev)
            if capped is not ev:
                cap.capped.add(id(item))
            ev = capped
        site, hour, day = ev.site, ts // HOUR_MS, ts // DAY_MS
        if ev.visitor:
            visitor: int | None = hasher.visitor(site, ev.visitor)
        elif ev.ip:
            visitor = hasher.anonymous(site, day, ev.ip, ev.ua or "")
        else:
            visitor = None
        session = hasher.session(site, ev.session) if ev.session else None
        kind = type(ev)
        name = ev.name if kind is Custom else ""  # type: ignore[union-attr]  # narrowed by kind
        R.count_into(s_events, (site, hour, _TAGS[kind], name))
        if session is not None:
            _session(s_sessions, (site, session), ts, kind is PageView)
        if kind is PageView:
            batch.page_view(ev, hour, day, visitor, session)  # type: ignore[arg-type]
        elif kind is Click:
            _click(shards, ev, day)  # type: ignore[arg-type]
        elif kind is ApiRequest:
            _api(shards, ev, hour)  # type: ignore[arg-type]
        elif kind is Conversion:
            _conversion(shards, ev, hour)  # type: ignore[arg-type]
        elif ev.props:  # type: ignore[union-attr]  # a custom event
            for prop, value in prop_pairs(ev.props):  # type: ignore[union-attr]
                if capping:
                    prop, value = cap.value("prop_key", prop), cap.value("prop_value", value)
                    if OVERFLOW in (prop, value):
                        cap.capped.add(id(item))
                R.count_into(s_props, (site, day, name, prop, value))
    batch.finish()
    return shards


_BROWSER_EVENTS: Final = (PageView, Click)  # what a bot's visit produces; API calls from libraries are traffic
_TAGS: Final[dict[type, str]] = {
    kind: kind.__struct_config__.tag  # type: ignore[misc]  # every event type is a tagged struct
    for kind in (PageView, Click, ApiRequest, Conversion, Custom)
}


def _session(rows: dict[tuple[Any, ...], list[Any]], key: tuple[str, int], ts: int, page_view: bool) -> None:
    """The ``sessions`` measures (first_seen MIN, last_seen MAX, pageviews, events), merged inline:
    a session's row is touched by nearly every event."""
    row = rows.get(key)
    if row is None:
        rows[key] = [ts, ts, 1 if page_view else 0, 1]
        return
    if ts < row[0]:
        row[0] = ts
    if ts > row[1]:
        row[1] = ts
    if page_view:
        row[2] += 1
    row[3] += 1


class _Batch:
    """Per-batch memo of page-view profiles for :func:`fold`."""

    def __init__(self, shards: dict[str, R.Shard], approximate: bool, urls: UrlRules) -> None:
        self._referrer = urls.referrer
        self._shards = shards
        self._approximate = approximate
        self._profiles: dict[tuple[str, int, tuple[str, ...]], int] = {}  # (site, day, values) -> views
        self._profile_ids: dict[tuple[str, ...], int] = {}
        self._hourly = shards[R.PAGEVIEWS_HOURLY.table].rows
        self._daily = shards[R.PAGEVIEWS_DAILY.table].rows
        if not approximate:
            self._path_visitors = shards[R.PATH_VISITORS.table].members
            self._site_visitors = shards[R.SITE_VISITORS.table].members
            self._site_sessions = shards[R.SITE_SESSIONS.table].members

    def page_view(self, ev: PageView, hour: int, day: int, visitor: int | None, session: int | None) -> None:
        site, path = ev.site, ev.path
        R.count_into(self._hourly, (site, hour, path))
        R.count_into(self._daily, (site, day, path))
        values = (
            self._referrer(ev.referrer, site) if ev.referrer else "",
            ev.device or "",
            ev.browser or "",
            ev.os or "",
            ev.country or "",
            ev.utm_source or "",
            ev.utm_medium or "",
            ev.utm_campaign or "",
        )
        key = (site, day, values)
        self._profiles[key] = self._profiles.get(key, 0) + 1
        if self._approximate:
            self._page_view_sketches(site, day, path, values, visitor, session)
            return
        if visitor is not None:
            self._path_visitors.setdefault((site, day, path, visitor), ())
            profile = self._profile_ids.get(values)
            if profile is None:
                profile = self._profile_ids[values] = profile_hash(values)
            self._site_visitors.setdefault((site, day, visitor, profile), values)
        if session is not None:
            self._site_sessions.setdefault((site, day, session), ())

    def _page_view_sketches(
        self, site: str, day: int, path: str, values: tuple[str, ...], visitor: int | None, session: int | None
    ) -> None:
        shards = self._shards
        if visitor is not None:
            shards[R.PATH_VISITORS_HLL.table].add((site, day, path, visitor))
            shards[R.SITE_VISITORS_HLL.table].add((site, day, visitor))
            dims = shards[R.DIMENSION_VISITORS_HLL.table]
            for dim, value in zip(R.DIMENSION_NAMES, values, strict=True):
                dims.add((site, day, dim, value, visitor))
        if session is not None:
            shards[R.SITE_SESSIONS_HLL.table].add((site, day, session))

    def finish(self) -> None:
        """Page views per dimension value, from the views per profile."""
        rows = self._shards[R.DIMENSIONS.table].rows
        for (site, day, values), views in self._profiles.items():
            for dim, value in zip(R.DIMENSION_NAMES, values, strict=True):
                key = (site, day, dim, value)  # R.count_into, inlined: ~8 keys per page view
                row = rows.get(key)
                if row is None:
                    rows[key] = [views]
                else:
                    row[0] += views


def profile_hash(values: tuple[str, ...]) -> int:
    """Stable 64-bit id of a combination of dimension values (same in every process)."""
    digest = hashlib.blake2b("\x1f".join(values).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _click(shards: dict[str, R.Shard], ev: Click, day: int) -> None:
    cx, cy = min(int(ev.x * GRID), GRID - 1), min(int(ev.y * GRID), GRID - 1)
    shards[R.CLICK_GRID.table].count((ev.site, day, ev.path, cx, cy))
    shards[R.CLICK_SELECTORS.table].count((ev.site, day, ev.path, ev.selector or ""))


def _api(shards: dict[str, R.Shard], ev: ApiRequest, hour: int) -> None:
    status_class = ev.status // 100
    key = (ev.site, hour, ev.method.upper(), ev.route, status_class)
    d = ev.duration_ms
    shards[R.API_REQUESTS.table].merge(key, (1, 1 if status_class == 5 else 0, d, d, d))
    shards[R.API_LATENCY.table].count((*key, bucket_of(d)))


def _conversion(shards: dict[str, R.Shard], ev: Conversion, hour: int) -> None:
    key = (ev.site, hour, ev.name, (ev.currency or "").upper())
    shards[R.CONVERSIONS.table].merge(key, (1, ev.revenue if ev.revenue is not None else R.ZERO))
