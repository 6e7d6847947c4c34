"""Synthetic, realistic analytics traffic for the demo, tests and benchmark.

Skewed sites and paths (Zipf-like), returning visitors with sessions, every
event type, both entry forms, producer retries (same ``id`` twice) and a
sprinkle of malformed entries. Deterministic for a given seed. Each
:class:`SynthEntry` carries the fields to XADD and, for a valid event, the
event as the producer meant it — the tests compute their truth from that,
independently of the daemon.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from streamproc.dev.agents import BOT_AGENTS, BROWSER_AGENTS, ip_of
from streamproc.redis.client import Client

SITES: Final = ("shop.example", "blog.example", "docs.example", "news.example", "app.example")
REFERRERS: Final = (
    None,
    None,
    "https://www.google.com/search?q=x",
    "https://news.ycombinator.com/item?id=1",
    "https://t.co/abc",
    "https://duckduckgo.com/",
    "android-app://com.slack",
    # What browsers and apps really send, counted as the hosts above (README "Referrers and paths").
    "google.com/search?q=x",
    "https://www.google.com./",
    "https://xn--mnchen-3ya.de/",
    "https://münchen.de/x",
    "https://shop.example/p/1",
)
DEVICES: Final = ("desktop", "mobile", "tablet")
BROWSERS: Final = ("Firefox", "Chrome", "Safari", "Edge")
OSES: Final = ("Linux", "Windows", "macOS", "iOS", "Android")
COUNTRIES: Final = ("FR", "DE", "US", "JP", "BR", "IN", "NG")
ROUTES: Final = (("GET", "/api/items"), ("POST", "/api/cart"), ("GET", "/api/user"), ("DELETE", "/api/cart/{id}"))
MALFORMED: Final = (
    {"event": "{not json"},
    {"event": "[1, 2, 3]"},
    {"event": json.dumps({"type": "teleport", "site": "shop.example", "ts": 1})},
    {"type": "page_view", "ts": "1700000000000", "path": "/"},
    {
        "type": "api_request",
        "site": "shop.example",
        "ts": "1700000000000",
        "method": "GET",
        "route": "/x",
        "status": "700",
        "duration_ms": "1",
    },
    {"type": "click", "site": "shop.example", "ts": "1700000000000", "path": "/", "x": "1.5", "y": "0.2"},
    {"type": "page_view", "site": "x" * 200, "ts": "1700000000000", "path": "/"},
    {"hello": "world"},
    {"event": json.dumps({"type": "conversion", "site": "shop.example", "ts": "yesterday", "name": "x"})},
)


@dataclass(frozen=True)
class SynthEntry:
    fields: dict[str, str]
    event: dict[str, Any] | None  # None: malformed, must be dead-lettered


def _zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (i + 1) ** s for i in range(n)]


class Generator:
    """Live-like traffic by default. ``raw_share``: the share of visitors whose events carry
    what a browser request does (``ua`` and ``ip``, no visitor, session, device, browser, OS or
    country), 1 in 20 of their page views and clicks from a bot; the daemon derives the rest.
    ``sites`` > 5 adds ``site<i>.example`` sites, ``paths`` sets how many Zipf-weighted paths
    there are, ``in_order=False`` spreads timestamps uniformly over the ``days`` instead of
    moving forward, and ``id_ratio`` is the share of events that carry a producer ``id``."""

    def __init__(
        self,
        seed: int = 1,
        now_ms: int | None = None,
        days: int = 3,
        bad_ratio: float = 0.005,
        visitors: int = 4000,
        raw_share: float = 0.0,
        *,
        sites: int = len(SITES),
        paths: int = 150,
        in_order: bool = True,
        id_ratio: float = 0.3,
    ) -> None:
        self.rng = random.Random(seed)
        self.raw_share = raw_share
        self.visitors = visitors
        self.now_ms = now_ms if now_ms is not None else int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        self.start_ms = self.now_ms - days * 86_400_000
        self.bad_ratio = bad_ratio
        self.sites = (*SITES, *(f"site{i}.example" for i in range(len(SITES), sites)))
        self.site_weights = _zipf_weights(len(self.sites))
        self.in_order = in_order
        self.id_ratio = id_ratio
        self.paths = ["/", *(f"/p/{i}" for i in range(1, paths))]
        self.path_weights = _zipf_weights(len(self.paths))
        self._sent_ids: list[tuple[str, dict[str, Any]]] = []

    def entries(self, n: int) -> Iterator[SynthEntry]:
        for i in range(n):
            r = self.rng.random()
            if r < self.bad_ratio:
                yield SynthEntry(dict(self.rng.choice(MALFORMED)), None)
            elif r < self.bad_ratio + 0.005 and self._sent_ids:
                # A producer retry: same event, same idempotency id, new entry.
                _, event = self.rng.choice(self._sent_ids)
                yield SynthEntry(self._encode(event), dict(event, _duplicate=True))
            else:
                event = self.event(i, n)
                yield SynthEntry(self._encode(event), event)

    @classmethod
    def hard(cls, seed: int, n: int, now_ms: int | None = None) -> Generator:
        """The hard shape for ``n`` events: a producer ``id`` on every event, mostly new
        visitors and sessions, timestamps out of order over two days, 20 sites, 2 000 paths."""
        return cls(
            seed,
            now_ms,
            days=2,
            bad_ratio=0.002,
            visitors=max(1000, n // 2),
            sites=20,
            paths=2000,
            in_order=False,
            id_ratio=1.0,
        )

    def event(self, i: int, n: int) -> dict[str, Any]:
        """The ``i``-th of ``n`` events: time moves forward through the range, as live
        traffic does, with a minute of jitter (producers' clocks and queues)."""
        rng = self.rng
        site = rng.choices(self.sites, self.site_weights)[0]
        span = self.now_ms - self.start_ms
        if self.in_order:
            ts = self.start_ms + span * i // max(n, 1) + rng.randrange(-60_000, 60_000)
        else:
            ts = self.start_ms + rng.randrange(span)
        ts = min(max(ts, self.start_ms), self.now_ms - 1)
        # A few loyal visitors come back often; most are seen a handful of times.
        visitor_n = rng.randrange(40) if rng.random() < 0.3 else rng.randrange(self.visitors)
        ev: dict[str, Any] = {"site": site, "ts": ts}
        raw = self.raw_share > 0 and (visitor_n * 7919) % 1000 < self.raw_share * 1000
        if raw:
            ev["ua"] = BROWSER_AGENTS[visitor_n % len(BROWSER_AGENTS)]
            ev["ip"] = ip_of(visitor_n)
        elif rng.random() < 0.95:
            ev["visitor"] = f"v{visitor_n}"
            ev["session"] = f"s{visitor_n}-{ts // 1_800_000}"  # one session per half hour
        kind = rng.choices(("page_view", "click", "api_request", "conversion", "custom"), (60, 15, 15, 5, 5))[0]
        ev["type"] = kind
        if raw and kind in ("page_view", "click") and rng.random() < 0.05:
            ev["ua"] = rng.choice(BOT_AGENTS)
        path = rng.choices(self.paths, self.path_weights)[0]
        if kind == "page_view":
            ev["path"] = path
            if rng.random() < 0.05:  # sent as a full URL or with a query string and fragment
                ev["_wire_path"] = rng.choice((f"https://{site}{path}", f"{path}?fbclid=abc", f"{path}?a=1#top"))
            # A visitor keeps their device, browser, OS and country; most page views are
            # internal navigation without a referrer.
            for i, (key, pool) in enumerate(
                (("device", DEVICES), ("browser", BROWSERS), ("os", OSES), ("country", COUNTRIES))
            ):
                if visitor_n % 10 and not raw:
                    ev[key] = pool[(visitor_n * (2 * i + 3) + visitor_n // 5) % len(pool)]
            if rng.random() < 0.3:
                referrer = rng.choice(REFERRERS)
                if referrer is not None:
                    ev["referrer"] = referrer
            if rng.random() < 0.2:
                ev["utm_source"] = rng.choice(("newsletter", "twitter", "ads"))
                ev["utm_medium"] = rng.choice(("email", "social", "cpc"))
                ev["utm_campaign"] = rng.choice(("spring", "launch"))
        elif kind == "click":
            ev.update(path=path, x=round(rng.random(), 4), y=round(rng.random(), 4))
            if rng.random() < 0.7:
                ev["selector"] = rng.choice(("#buy", "nav a", ".cta", "footer a"))
        elif kind == "api_request":
            method, route = rng.choice(ROUTES)
            status = rng.choices((200, 201, 404, 500, 503), (80, 8, 6, 4, 2))[0]
            ev.update(method=method, route=route, status=status, duration_ms=round(rng.lognormvariate(3.0, 0.8), 3))
        elif kind == "conversion":
            ev["name"] = rng.choice(("signup", "purchase"))
            if ev["name"] == "purchase":
                currency = rng.choices(("EUR", "USD", "JPY", ""), (70, 20, 8, 2))[0]
                cents = rng.randrange(100, 50_000)
                ev["revenue"] = str(cents * 2) if currency == "JPY" else str(Decimal(cents) / 100)
                if currency:
                    ev["currency"] = currency
        else:
            ev["name"] = rng.choice(("video_play", "download", "share"))
            if rng.random() < 0.5:
                ev["props"] = {"plan": rng.choice(("free", "pro")), "n": rng.randrange(10)}
        if rng.random() < self.id_ratio:
            ev["id"] = f"{site}-{i}-{rng.getrandbits(32):x}"
            self._sent_ids.append((site, ev))
        return ev

    def _encode(self, event: dict[str, Any]) -> dict[str, str]:
        """JSON form or flat form, and integer or RFC 3339 timestamps."""
        rng = self.rng
        wire = {k: v for k, v in event.items() if not k.startswith("_")}
        if "_wire_path" in event:
            wire["path"] = event["_wire_path"]  # what a page sends; `path` is how it is counted
        if rng.random() < 0.2:
            offset = dt.timezone(dt.timedelta(hours=rng.choice((0, 2, -5))))
            ts = wire["ts"]
            stamp = dt.datetime.fromtimestamp(ts // 1000, offset).replace(microsecond=ts % 1000 * 1000)
            wire["ts"] = stamp.isoformat(timespec="milliseconds")
        if rng.random() < 0.5:
            return {"event": json.dumps(wire)}
        props = wire.pop("props", None) or {}
        return {**{k: str(v) for k, v in wire.items()}, **{f"props.{k}": str(v) for k, v in props.items()}}


def produce(
    client: Client,
    stream: str,
    entries: Iterable[SynthEntry],
    chunk: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """XADD entries in pipelined chunks; returns how many were added."""
    sent = 0
    pipe = client.pipeline(transaction=False)
    pending = 0
    for entry in entries:
        pipe.xadd(stream, entry.fields)  # type: ignore[arg-type,unused-ignore]  # str fields are accepted
        pending += 1
        if pending == chunk:
            pipe.execute()
            sent += pending
            if progress:
                progress(pending)
            pending = 0
    if pending:
        pipe.execute()
        sent += pending
        if progress:
            progress(pending)
    return sent
