"""Fold validated events into rollup shards. Pure: no sockets, no clocks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

import msgspec

from streamproc import rollups as R
from streamproc.decode import Accepted
from streamproc.events import ApiRequest, Click, Conversion, Custom, Event, PageView
from streamproc.histogram import bucket_of

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
GRID: Final = 20  # heatmap cells per axis


class Hasher:
    """Keyed 64-bit hashes for visitor and session ids (never stored in clear).

    The site is part of the input, so one visitor is not linkable across sites.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._visitor = hashlib.blake2b(key=secret, digest_size=8, person=b"visitor")
        self._session = hashlib.blake2b(key=secret, digest_size=8, person=b"session")
        self._day_salts: dict[int, hashlib.blake2b] = {}

    def _hash(self, base: hashlib.blake2b, site: str, value: str) -> int:
        h = base.copy()
        h.update(site.encode())
        h.update(b"\0")
        h.update(value.encode())
        return int.from_bytes(h.digest(), "big", signed=True)

    def visitor(self, site: str, visitor: str) -> int:
        return self._hash(self._visitor, site, visitor)

    def session(self, site: str, session: str) -> int:
        return self._hash(self._session, site, session)

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


def referrer_host(referrer: str | None) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer).hostname
    except ValueError:
        return ""
    return host or ""


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


# Every event field read below must also be covered by sink.event_digest, which decides when a
# skipped entry repeats a counted one (today: all fields but `props`, with `ts` as ts_ms).
def fold(
    events: Iterable[Accepted], hasher: Hasher, cap: KeyCap | None = None, approximate: bool = False
) -> dict[str, R.Shard]:
    """Aggregate a batch of accepted events into one shard per rollup (``approximate``:
    unique visitors and sessions go to HyperLogLog rollups instead of exact sets)."""
    cap = cap or KeyCap()
    shards = R.new_shards(approximate)
    page_view = _page_view_approximate if approximate else _page_view
    s_events = shards[R.EVENTS.table]
    s_sessions = shards[R.SESSIONS.table]
    for item in events:
        ev, ts = cap.apply(item.event), item.ts_ms
        if ev is not item.event:
            cap.capped.add(id(item))
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
        s_events.count((site, hour, ev.__struct_config__.tag, name))
        if session is not None:
            s_sessions.merge((site, session), (ts, ts, 1 if kind is PageView else 0, 1))
        if kind is PageView:
            page_view(shards, ev, hour, day, visitor, session)  # type: ignore[arg-type]
        elif kind is Click:
            _click(shards, ev, day)  # type: ignore[arg-type]
        elif kind is ApiRequest:
            _api(shards, ev, hour)  # type: ignore[arg-type]
        elif kind is Conversion:
            _conversion(shards, ev, hour)  # type: ignore[arg-type]
    return shards


def _page_view(
    shards: dict[str, R.Shard],
    ev: PageView,
    hour: int,
    day: int,
    visitor: int | None,
    session: int | None,
) -> None:
    site, path = ev.site, ev.path
    values = _page_view_counts(shards, ev, hour, day)
    if visitor is not None:
        shards[R.PATH_VISITORS.table].add((site, day, path, visitor))
        shards[R.SITE_VISITORS.table].add((site, day, visitor, profile_hash(values)), values)
    if session is not None:
        shards[R.SITE_SESSIONS.table].add((site, day, session))


def _page_view_approximate(
    shards: dict[str, R.Shard],
    ev: PageView,
    hour: int,
    day: int,
    visitor: int | None,
    session: int | None,
) -> None:
    site, path = ev.site, ev.path
    values = _page_view_counts(shards, ev, hour, day)
    if visitor is not None:
        shards[R.PATH_VISITORS_HLL.table].add((site, day, path, visitor))
        shards[R.SITE_VISITORS_HLL.table].add((site, day, visitor))
        dims = shards[R.DIMENSION_VISITORS_HLL.table]
        for dim, value in zip(R.DIMENSION_NAMES, values, strict=True):
            dims.add((site, day, dim, value, visitor))
    if session is not None:
        shards[R.SITE_SESSIONS_HLL.table].add((site, day, session))


def _page_view_counts(shards: dict[str, R.Shard], ev: PageView, hour: int, day: int) -> tuple[str, ...]:
    """Page view counts common to both modes; returns the dimension values."""
    site, path = ev.site, ev.path
    shards[R.PAGEVIEWS_HOURLY.table].count((site, hour, path))
    shards[R.PAGEVIEWS_DAILY.table].count((site, day, path))
    values = (
        referrer_host(ev.referrer),
        ev.device or "",
        ev.browser or "",
        ev.os or "",
        ev.country or "",
        ev.utm_source or "",
        ev.utm_medium or "",
        ev.utm_campaign or "",
    )
    dims = shards[R.DIMENSIONS.table]
    for dim, value in zip(R.DIMENSION_NAMES, values, strict=True):
        dims.count((site, day, dim, value))
    return values


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
