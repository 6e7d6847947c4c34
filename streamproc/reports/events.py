"""Event views of ``streamproc report``: API routes, conversions, click heatmap.

API requests and conversions are hourly rollups: exact for any window on whole
UTC hours (latency quantiles within the histogram's 2 %). Clicks are per UTC
day, read on the window's :func:`~streamproc.reports.timerange.visitor_days`.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any, Final

from streamproc.core.fold import GRID
from streamproc.core.histogram import quantiles
from streamproc.reports.timerange import Unit, Window, bucket_index, buckets, iso
from streamproc.reports.views import Conn

QS: Final = (0.50, 0.95, 0.99)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- API ----------------------------------------------------------------------------------------


def api(conn: Conn, site: str, w: Window, unit: Unit) -> dict[str, Any]:
    hours = (site, w.start, w.end)
    hist: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
    for method, route, bucket, n in conn.execute(
        "SELECT method, route, bucket, sum(requests)::bigint FROM api_latency_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY method, route, bucket",
        hours,
    ).fetchall():
        hist[(method, route)][bucket] = int(n)
    routes = []
    for method, route, count, errors, total_ms in conn.execute(
        "SELECT method, route, sum(requests)::bigint, sum(errors)::bigint, sum(duration_sum_ms) FROM api_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY method, route",
        hours,
    ).fetchall():
        p50, p95, p99 = quantiles(hist[(method, route)], QS)
        routes.append(
            {
                "method": method,
                "route": route,
                "count": int(count),
                "errors": int(errors),
                "error_rate": round(errors / count, 4) if count else None,
                "avg_ms": _ms(total_ms / count) if count else None,
                "p50_ms": _ms(p50),
                "p95_ms": _ms(p95),
                "p99_ms": _ms(p99),
            }
        )
    routes.sort(key=lambda r: (-r["count"], r["method"], r["route"]))
    return {
        "view": "api",
        "site": site,
        "range": w.as_json(),
        "exact": {"count": w.hour_exact, "errors": w.hour_exact, "quantiles": False},
        "routes": routes,
        "series": _api_series(conn, site, w, unit),
    }


def _api_series(conn: Conn, site: str, w: Window, unit: Unit) -> dict[str, Any]:
    """Requests, 5xx errors and p95 latency per bucket, all routes together."""
    bks = buckets(w, unit)
    starts = [b.start for b in bks]
    requests, errors = [0] * len(bks), [0] * len(bks)
    for hour, n, e in conn.execute(
        "SELECT hour, sum(requests)::bigint, sum(errors)::bigint FROM api_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY hour",
        (site, w.start, w.end),
    ).fetchall():
        i = bucket_index(bks, starts, hour)
        if i is not None:
            requests[i] += int(n)
            errors[i] += int(e)
    hists: list[dict[int, int]] = [defaultdict(int) for _ in bks]
    for hour, bucket, n in conn.execute(
        "SELECT hour, bucket, sum(requests)::bigint FROM api_latency_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY hour, bucket",
        (site, w.start, w.end),
    ).fetchall():
        i = bucket_index(bks, starts, hour)
        if i is not None:
            hists[i][bucket] += int(n)
    return {
        "unit": unit,
        "buckets": [
            {
                "start": iso(b.start),
                "label": b.label,
                "requests": n,
                "errors": e,
                "p95_ms": _ms(quantiles(h, (0.95,))[0]),
            }
            for b, n, e, h in zip(bks, requests, errors, hists, strict=True)
        ],
    }


# --- conversions ------------------------------------------------------------------------------------


def conversions(conn: Conn, site: str, w: Window, unit: Unit) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT name, currency, sum(conversions)::bigint, sum(revenue) FROM conversions_hourly"
        ' WHERE site = %s AND hour >= %s AND hour < %s GROUP BY name, currency ORDER BY name COLLATE "C", currency',
        (site, w.start, w.end),
    ).fetchall()
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for _name, currency, _n, amount in rows:
        revenue[currency] += amount
    bks = buckets(w, unit)
    starts = [b.start for b in bks]
    per_bucket = [0] * len(bks)
    for hour, n in conn.execute(
        "SELECT hour, sum(conversions)::bigint FROM conversions_hourly"
        " WHERE site = %s AND hour >= %s AND hour < %s GROUP BY hour",
        (site, w.start, w.end),
    ).fetchall():
        i = bucket_index(bks, starts, hour)
        if i is not None:
            per_bucket[i] += int(n)
    return {
        "view": "conversions",
        "site": site,
        "range": w.as_json(),
        "exact": {"count": w.hour_exact, "revenue": w.hour_exact},
        "conversions": [
            {"name": name, "currency": currency, "count": int(n), "revenue": str(amount)}
            for name, currency, n, amount in rows
        ],
        "total_count": sum(int(r[2]) for r in rows),
        "revenue_by_currency": {c: str(v) for c, v in sorted(revenue.items())},
        "series": {
            "unit": unit,
            "buckets": [
                {"start": iso(b.start), "label": b.label, "conversions": n}
                for b, n in zip(bks, per_bucket, strict=True)
            ],
        },
    }


# --- heatmap --------------------------------------------------------------------------------------


def heatmap(conn: Conn, site: str, w: Window, path: str, limit: int) -> dict[str, Any]:
    """Clicks on ``path`` per cell of the GRID x GRID grid (``grid[y][x]``, y = 0 at the top of the page)."""
    days = w.visitor_days()
    grid = [[0] * GRID for _ in range(GRID)]
    for x, y, n in conn.execute(
        "SELECT cell_x, cell_y, sum(clicks)::bigint FROM clicks_grid_daily"
        " WHERE site = %s AND day = ANY(%s) AND path = %s GROUP BY cell_x, cell_y",
        (site, days, path),
    ).fetchall():
        grid[y][x] = int(n)
    selectors = conn.execute(
        "SELECT selector, sum(clicks)::bigint AS n FROM clicks_selector_daily"
        ' WHERE site = %s AND day = ANY(%s) AND path = %s GROUP BY selector ORDER BY n DESC, selector COLLATE "C"'
        " LIMIT %s",
        (site, days, path, limit),
    ).fetchall()
    total = sum(map(sum, grid))
    busiest: list[Any] = []
    if total == 0:
        busiest = conn.execute(
            "SELECT path, sum(clicks)::bigint AS n FROM clicks_grid_daily WHERE site = %s AND day = ANY(%s)"
            ' GROUP BY path ORDER BY n DESC, path COLLATE "C" LIMIT 5',
            (site, days),
        ).fetchall()
    return {
        "view": "heatmap",
        "site": site,
        "range": w.as_json(),
        "visitor_days": [d.isoformat() for d in days],
        "exact": {"clicks": w.utc_days_exact},
        "path": path,
        "grid_size": GRID,
        "clicks": total,
        "max_cell": max(map(max, grid)),
        "grid": grid,
        "selectors": [{"selector": s, "clicks": int(n)} for s, n in selectors],
        "paths_with_clicks": [{"path": p, "clicks": int(n)} for p, n in busiest],
    }
