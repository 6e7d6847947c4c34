"""Read the rollups back: the figures of ``streamproc report``.

Visitors and sessions over a range are exact: they are counted distinct over
the per-day sets, not summed per day.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any, Final

import psycopg

from streamproc.core.histogram import quantiles
from streamproc.reports.uniques import Uniques

EXACT: Final = Uniques()


def _one(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def build_report(
    conn: psycopg.Connection[Any], site: str, start: dt.date, end: dt.date, u: Uniques = EXACT
) -> dict[str, Any]:
    """All figures for ``site`` from ``start`` to ``end`` (inclusive UTC days)."""
    t0 = dt.datetime.combine(start, dt.time(), dt.UTC)
    t1 = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    days = (site, start, end)
    hours = (site, t0, t1)
    pageviews = _one(
        conn, "SELECT coalesce(sum(views), 0) FROM pageviews_daily WHERE site = %s AND day BETWEEN %s AND %s", days
    )
    day_list = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    visitors = u.total(conn, "visitors", site, day_list)
    sessions = u.total(conn, "sessions", site, day_list)
    bounced, engaged, avg_s = conn.execute(
        "SELECT count(*) FILTER (WHERE pageviews = 1), count(*),"
        " avg(extract(epoch FROM last_seen - first_seen))"
        " FROM sessions WHERE site = %s AND pageviews > 0 AND first_seen >= %s AND first_seen < %s",
        hours,
    ).fetchone() or (0, 0, None)
    events = dict(
        conn.execute(
            "SELECT type, sum(events)::bigint FROM events_hourly WHERE site = %s AND hour >= %s AND hour < %s"
            " GROUP BY type ORDER BY type",
            hours,
        ).fetchall()
    )
    conversions, revenue = _conversions(conn, hours)
    return {
        "site": site,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "uniques": u.mode,
        "pageviews": int(pageviews),
        "visitors": int(visitors),
        "sessions": int(sessions),
        "bounce_rate": round(bounced / engaged, 4) if engaged else None,
        "avg_session_seconds": round(float(avg_s), 3) if avg_s is not None else None,
        "events": {k: int(v) for k, v in events.items()},
        "revenue_by_currency": revenue,
        "conversions": conversions,
        "top_paths": _top_paths(conn, days, day_list, u),
        "api": _api(conn, hours),
    }


def _conversions(conn: psycopg.Connection[Any], hours: tuple[Any, ...]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Conversions per name with revenue per currency, and revenue per currency over all names.

    Amounts in different currencies are never added together: every revenue figure is keyed by
    its currency (``""`` for conversions sent without one)."""
    names: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for name, currency, count, revenue in conn.execute(
        "SELECT name, currency, sum(conversions)::bigint, sum(revenue) FROM conversions_hourly"
        ' WHERE site = %s AND hour >= %s AND hour < %s GROUP BY name, currency ORDER BY name, currency COLLATE "C"',
        hours,
    ).fetchall():
        entry = names.setdefault(name, {"name": name, "count": 0, "revenue_by_currency": {}})
        entry["count"] += int(count)
        entry["revenue_by_currency"][currency] = str(revenue)
        totals[currency] += revenue
    return list(names.values()), {c: str(v) for c, v in sorted(totals.items())}


def _top_paths(
    conn: psycopg.Connection[Any], days: tuple[Any, ...], day_list: list[dt.date], u: Uniques, limit: int = 10
) -> list[dict[str, Any]]:
    top = conn.execute(
        "SELECT path, sum(views)::bigint AS views FROM pageviews_daily"
        " WHERE site = %s AND day BETWEEN %s AND %s GROUP BY path"
        ' ORDER BY views DESC, path COLLATE "C" LIMIT %s',
        (*days, limit),
    ).fetchall()
    visitors = u.by_path(conn, days[0], day_list, [p for p, _ in top])
    return [{"path": p, "views": int(v), "visitors": visitors.get(p, 0)} for p, v in top]


def _api(conn: psycopg.Connection[Any], hours: tuple[Any, ...]) -> list[dict[str, Any]]:
    totals = conn.execute(
        "SELECT method, route, sum(requests)::bigint, sum(errors)::bigint FROM api_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY method, route",
        hours,
    ).fetchall()
    hist: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for method, route, bucket, n in conn.execute(
        "SELECT method, route, bucket, sum(requests)::bigint FROM api_latency_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY method, route, bucket",
        hours,
    ).fetchall():
        hist[(method, route)][bucket] = int(n)
    out = []
    for method, route, count, errors in totals:
        p50, p95, p99 = quantiles(hist[(method, route)], (0.50, 0.95, 0.99))
        out.append(
            {
                "method": method,
                "route": route,
                "count": int(count),
                "errors": int(errors),
                "p50_ms": _ms(p50),
                "p95_ms": _ms(p95),
                "p99_ms": _ms(p99),
            }
        )
    out.sort(key=lambda r: (-r["count"], r["method"], r["route"]))
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def sites(conn: psycopg.Connection[Any]) -> list[str]:
    """Sites seen, busiest first."""
    return [
        r[0]
        for r in conn.execute("SELECT site FROM events_hourly GROUP BY site ORDER BY sum(events) DESC, site").fetchall()
    ]
