"""The expected report, computed straight from the events the producer meant.

Independent of the daemon: no folding, no hashing, no SQL; plain Python over
the synthetic events. Definitions follow the README's rollup table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

DAY_MS = 86_400_000


def valid_events(entries: Iterable[Any]) -> list[dict[str, Any]]:
    """Events that must be counted once: no malformed entries, no producer retries."""
    return [e.event for e in entries if e.event is not None and not e.event.get("_duplicate")]


def malformed(entries: Iterable[Any]) -> list[dict[str, str]]:
    return [e.fields for e in entries if e.event is None]


# The synthetic referrers as the README's rules count them, written out by hand (not computed with
# streamproc's own normalisation): host lower-cased, no `www.`, no trailing dot, IDN in Unicode.
REFERRER_HOSTS = {
    "https://www.google.com/search?q=x": "google.com",
    "google.com/search?q=x": "google.com",
    "https://www.google.com./": "google.com",
    "https://news.ycombinator.com/item?id=1": "news.ycombinator.com",
    "https://t.co/abc": "t.co",
    "https://duckduckgo.com/": "duckduckgo.com",
    "android-app://com.slack": "com.slack",
    "https://xn--mnchen-3ya.de/": "münchen.de",
    "https://münchen.de/x": "münchen.de",
    "https://shop.example/p/1": "shop.example",
}


def referrer_value(event: dict[str, Any]) -> str:
    """The `referrer` dimension value of a synthetic page view: its host, or "" for none and for
    the site's own pages (internal navigation is not a source)."""
    host = REFERRER_HOSTS[event["referrer"]] if event.get("referrer") else ""
    return "" if host == event["site"] else host


def day_of(ts_ms: int) -> dt.date:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ts_ms)).date()


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def expected_report(events: list[dict[str, Any]], site: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    mine = [e for e in events if e["site"] == site]
    in_range = [e for e in mine if start <= day_of(e["ts"]) <= end]
    views = [e for e in in_range if e["type"] == "page_view"]

    # Sessions: first/last seen and page views over all of a session's events.
    sess_first: dict[str, int] = {}
    sess_last: dict[str, int] = {}
    sess_views: Counter[str] = Counter()
    for e in mine:
        s = e.get("session")
        if s is None:
            continue
        sess_first[s] = min(sess_first.get(s, e["ts"]), e["ts"])
        sess_last[s] = max(sess_last.get(s, e["ts"]), e["ts"])
        if e["type"] == "page_view":
            sess_views[s] += 1
    engaged = [s for s in sess_views if start <= day_of(sess_first[s]) <= end]
    bounced = sum(1 for s in engaged if sess_views[s] == 1)
    durations = [(sess_last[s] - sess_first[s]) / 1000 for s in engaged]

    path_views: Counter[str] = Counter(e["path"] for e in views)
    path_visitors: dict[str, set[str]] = defaultdict(set)
    for e in views:
        if "visitor" in e:
            path_visitors[e["path"]].add(e["visitor"])
    top = sorted(path_views.items(), key=lambda kv: (-kv[1], kv[0]))[:10]

    conv_count: Counter[str] = Counter()
    conv_revenue: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    api: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in in_range:
        if e["type"] == "conversion":
            conv_count[e["name"]] += 1
            conv_revenue[e["name"]][e.get("currency", "").upper()] += Decimal(e.get("revenue", "0"))
        elif e["type"] == "api_request":
            api[(e["method"].upper(), e["route"])].append(e)

    return {
        "site": site,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "pageviews": len(views),
        "visitors": len({e["visitor"] for e in views if "visitor" in e}),
        "sessions": len({e["session"] for e in views if "session" in e}),
        "bounce_rate": bounced / len(engaged) if engaged else None,
        "avg_session_seconds": sum(durations) / len(durations) if durations else None,
        "events": dict(sorted(Counter(e["type"] for e in in_range).items())),
        "revenue_by_currency": _by_currency(conv_revenue.values()),
        "conversions": [
            {"name": n, "count": conv_count[n], "revenue_by_currency": dict(conv_revenue[n])}
            for n in sorted(conv_count)
        ],
        "top_paths": [{"path": p, "views": v, "visitors": len(path_visitors[p])} for p, v in top],
        "api": {
            key: {
                "count": len(reqs),
                "errors": sum(1 for x in reqs if x["status"] >= 500),
                "durations": [float(x["duration_ms"]) for x in reqs],
            }
            for key, reqs in api.items()
        },
    }


def _by_currency(per_name: Iterable[dict[str, Decimal]]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for amounts in per_name:
        for currency, amount in amounts.items():
            totals[currency] += amount
    return dict(totals)


def _decimals(amounts: dict[str, str]) -> dict[str, Decimal]:
    return {c: Decimal(v) for c, v in amounts.items()}


# Approximate uniques: HyperLogLog with 2^11 registers has a standard error of 1.04 / sqrt(2048)
# = 2.3 %; three standard errors bound the error of any one figure.
HLL_TOLERANCE = 3 * 1.04 / math.sqrt(2048)


def close_enough(got: int, want: int) -> bool:
    return abs(got - want) <= HLL_TOLERANCE * want


def assert_report_matches(got: dict[str, Any], want: dict[str, Any], approximate: bool = False) -> None:
    """Exact on counts and money; within the histogram's bound on latency quantiles; with
    ``approximate`` uniques, visitors and sessions within HyperLogLog's bound."""
    where = f"{want['site']} {want['from']}..{want['to']}"
    exact_keys = (
        ("pageviews", "events") if approximate else ("pageviews", "visitors", "sessions", "events", "top_paths")
    )
    for key in exact_keys:
        assert got[key] == want[key], f"{where}: {key} {got[key]!r} != {want[key]!r}"
    if approximate:
        assert got["uniques"] == "approximate"
        for key in ("visitors", "sessions"):
            assert close_enough(got[key], want[key]), f"{where}: {key} {got[key]} vs exact {want[key]}"
        assert [(p["path"], p["views"]) for p in got["top_paths"]] == [
            (p["path"], p["views"]) for p in want["top_paths"]
        ]
        for g, w in zip(got["top_paths"], want["top_paths"], strict=True):
            assert close_enough(g["visitors"], w["visitors"]), f"{where}: visitors of {w['path']} {g} vs {w}"
    for key in ("bounce_rate", "avg_session_seconds"):
        if want[key] is None:
            assert got[key] is None, f"{where}: {key}"
        else:
            assert got[key] is not None and math.isclose(got[key], want[key], abs_tol=1e-3), (
                f"{where}: {key} {got[key]} != {want[key]}"
            )
    assert "revenue" not in got, f"{where}: a revenue figure across currencies"
    assert _decimals(got["revenue_by_currency"]) == want["revenue_by_currency"], f"{where}: revenue"
    assert [(c["name"], c["count"], _decimals(c["revenue_by_currency"])) for c in got["conversions"]] == [
        (c["name"], c["count"], c["revenue_by_currency"]) for c in want["conversions"]
    ], f"{where}: conversions"
    got_api = {(a["method"], a["route"]): a for a in got["api"]}
    assert set(got_api) == set(want["api"]), f"{where}: api routes"
    for key, w in want["api"].items():
        g = got_api[key]
        assert (g["count"], g["errors"]) == (w["count"], w["errors"]), f"{where}: api {key}"
        for q, name in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            true = nearest_rank(w["durations"], q)
            assert abs(g[name] - true) <= 0.05 * true + 1e-3, f"{where}: api {key} {name} {g[name]} vs {true}"
