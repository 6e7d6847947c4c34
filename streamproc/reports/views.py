"""Traffic views of ``streamproc report``: overview, pages, sources/devices, realtime.

Each view reads the rollups for one site and a :class:`~streamproc.reports.timerange.Window`
and returns a JSON-ready dict (no Decimal, no datetime). Page views and
session timings come from hourly or per-session rows and are exact for any
window on whole UTC hours; unique visitors, sessions and dimension values
come from per-UTC-day sets and are exact only for whole UTC days, which each
view states in its ``exact`` map (never exact with ``uniques = "approximate"``:
then they come from HyperLogLog sketches, see :mod:`streamproc.reports.uniques`).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any, Final

import psycopg
from psycopg import sql

from streamproc.core.rollups import DIMENSION_NAMES
from streamproc.errors import StreamprocError
from streamproc.reports.timerange import HOUR, Bucket, Unit, Window, buckets, iso, noon_days, rebucket
from streamproc.reports.uniques import Uniques

EXACT: Final = Uniques()

SOURCES: Final = ("referrer", "utm_source", "utm_medium", "utm_campaign")
DEVICES: Final = ("device", "browser", "os", "country")

Conn = psycopg.Connection[Any]


class UnknownSite(StreamprocError):
    """No event was ever counted for the site: a typo, most likely (a usage error)."""

    exit_code = 2


def check_site(conn: Conn, site: str) -> None:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM events_hourly WHERE site = %s)", (site,)).fetchone()
    if row and row[0]:
        return
    known = [r[0] for r in conn.execute("SELECT DISTINCT site FROM events_hourly ORDER BY 1 LIMIT 6").fetchall()]
    hint = f" (known: {', '.join(known[:5])}{', ...' if len(known) > 5 else ''})" if known else " (no data at all yet)"
    raise UnknownSite(f"no events were ever counted for site {site!r}{hint}")


def _scalar(conn: Conn, query: str | sql.Composed, params: tuple[Any, ...]) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(float(num) / float(den), digits) if den else None


# --- overview ------------------------------------------------------------------------------------


def headline(conn: Conn, site: str, w: Window, u: Uniques = EXACT) -> dict[str, Any]:
    """Views, visitors, sessions, bounce rate and average session length over one window.

    Visitors and sessions are read on the window's :meth:`Window.visitor_days` (their sets
    are kept per UTC day): exact for whole UTC days, approximate otherwise.
    """
    days = w.visitor_days()
    views = _scalar(
        conn,
        "SELECT coalesce(sum(views), 0) FROM pageviews_hourly WHERE site = %s AND hour >= %s AND hour < %s",
        (site, w.start, w.end),
    )
    bounced, engaged, avg_s = conn.execute(
        "SELECT count(*) FILTER (WHERE pageviews = 1), count(*), avg(extract(epoch FROM last_seen - first_seen))"
        " FROM sessions WHERE site = %s AND pageviews > 0 AND first_seen >= %s AND first_seen < %s",
        (site, w.start, w.end),
    ).fetchone() or (0, 0, None)
    return {
        "pageviews": int(views),
        "visitors": u.total(conn, "visitors", site, days) if days else None,
        "sessions": u.total(conn, "sessions", site, days) if days else None,
        "bounce_rate": _ratio(bounced, engaged),
        "avg_session_seconds": round(float(avg_s), 3) if avg_s is not None else None,
    }


def _change(cur: float | None, prev: float | None) -> tuple[float | None, float | None]:
    if cur is None or prev is None:
        return None, None
    diff = round(cur - prev, 4)
    return (int(diff) if isinstance(cur, int) and isinstance(prev, int) else diff), _ratio(cur - prev, prev)


def overview(conn: Conn, site: str, w: Window, unit: Unit, u: Uniques = EXACT) -> dict[str, Any]:
    prev_w = w.previous()
    cur, prev = headline(conn, site, w, u), headline(conn, site, prev_w, u)
    exact = {
        "pageviews": w.hour_exact,
        "visitors": w.utc_days_exact and not u.approximate,
        "sessions": w.utc_days_exact and not u.approximate,
        "bounce_rate": True,
        "avg_session_seconds": True,
    }
    metrics = {}
    for name, value in cur.items():
        change, change_rel = _change(value, prev[name])
        metrics[name] = {
            "value": value,
            "previous": prev[name],
            "change": change,
            "change_rel": change_rel,
            "exact": exact[name],
        }
    return {
        "view": "overview",
        "site": site,
        "range": w.as_json(),
        "previous_range": prev_w.as_json(),
        "visitor_days": [d.isoformat() for d in w.visitor_days()],
        "uniques": u.mode,
        "metrics": metrics,
        "series": traffic_series(conn, site, w, unit, u),
    }


def traffic_series(conn: Conn, site: str, w: Window, unit: Unit, u: Uniques = EXACT) -> dict[str, Any]:
    """Page views and sessions started per bucket (exact); visitors per day bucket (per UTC day)."""
    bks = buckets(w, unit)
    views = rebucket(
        bks,
        conn.execute(
            "SELECT hour, sum(views)::bigint FROM pageviews_hourly WHERE site = %s AND hour >= %s AND hour < %s"
            " GROUP BY hour",
            (site, w.start, w.end),
        ).fetchall(),
    )
    started = rebucket(
        bks,
        [
            (t.replace(tzinfo=dt.UTC), n)
            for t, n in conn.execute(
                "SELECT date_trunc('hour', first_seen AT TIME ZONE 'UTC'), count(*) FROM sessions"
                " WHERE site = %s AND pageviews > 0 AND first_seen >= %s AND first_seen < %s GROUP BY 1",
                (site, w.start, w.end),
            ).fetchall()
        ],
    )
    visitors: list[int | None] = [None] * len(bks)
    if unit == "day":
        visitors = list(_visitors_per_bucket(conn, site, bks, u))
    return {
        "unit": unit,
        "exact": {
            "pageviews": all(b.start.minute == 0 for b in bks) and w.hour_exact,
            "sessions": w.hour_exact,
            "visitors": unit == "day"
            and all(b.end - b.start == dt.timedelta(days=1) for b in bks)
            and w.utc_days_exact
            and not u.approximate,
        },
        "buckets": [
            {"start": iso(b.start), "label": b.label, "pageviews": v, "sessions": s, "visitors": u}
            for b, v, s, u in zip(bks, views, started, visitors, strict=True)
        ],
    }


def _visitors_per_bucket(conn: Conn, site: str, bks: list[Bucket], u: Uniques) -> list[int | None]:
    per_bucket = [noon_days(b.start, b.end) for b in bks]
    singles = sorted({days[0] for days in per_bucket if len(days) == 1})
    counts = u.by_day(conn, site, singles)
    out: list[int | None] = []
    for days in per_bucket:
        if not days:
            out.append(None)
        elif len(days) == 1:
            out.append(int(counts.get(days[0], 0)))
        else:
            out.append(u.total(conn, "visitors", site, days))
    return out


# --- pages and dimensions --------------------------------------------------------------------------


def pages(conn: Conn, site: str, w: Window, limit: int, u: Uniques = EXACT) -> dict[str, Any]:
    """Top paths by page views, with visitors per path over the window's :meth:`Window.visitor_days`."""
    days = w.visitor_days()
    total = int(
        _scalar(
            conn,
            "SELECT coalesce(sum(views), 0) FROM pageviews_hourly WHERE site = %s AND hour >= %s AND hour < %s",
            (site, w.start, w.end),
        )
    )
    top = conn.execute(
        "SELECT path, sum(views)::bigint AS views FROM pageviews_hourly WHERE site = %s AND hour >= %s AND hour < %s"
        ' GROUP BY path ORDER BY views DESC, path COLLATE "C" LIMIT %s',
        (site, w.start, w.end, limit),
    ).fetchall()
    visitors = u.by_path(conn, site, days, [p for p, _ in top])
    return {
        "view": "pages",
        "site": site,
        "range": w.as_json(),
        "visitor_days": [d.isoformat() for d in days],
        "uniques": u.mode,
        "exact": {"views": w.hour_exact, "visitors": w.utc_days_exact and not u.approximate},
        "pageviews": total,
        "paths": [
            {
                "path": p,
                "views": int(v),
                "visitors": int(visitors.get(p, 0)) if days else None,
                "share": _ratio(v, total),
            }
            for p, v in top
        ],
    }


def dimensions(
    conn: Conn, site: str, w: Window, names: tuple[str, ...], limit: int, view: str, u: Uniques = EXACT
) -> dict[str, Any]:
    """Views and visitors per value of each dimension (``''`` = absent), busiest first."""
    days = w.visitor_days()
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        if name not in DIMENSION_NAMES:
            raise ValueError(f"unknown dimension {name!r}")
        top = conn.execute(
            "SELECT value, sum(views)::bigint AS views FROM dimensions_daily"
            " WHERE site = %s AND day = ANY(%s) AND dimension = %s"
            ' GROUP BY value ORDER BY views DESC, value COLLATE "C" LIMIT %s',
            (site, days, name, limit),
        ).fetchall()
        visitors = u.by_value(conn, site, days, name, [v for v, _ in top])
        out[name] = [{"value": v, "views": int(n), "visitors": int(visitors.get(v, 0))} for v, n in top]
    return {
        "view": view,
        "site": site,
        "range": w.as_json(),
        "visitor_days": [d.isoformat() for d in days],
        "uniques": u.mode,
        "exact": {"views": w.utc_days_exact, "visitors": w.utc_days_exact and not u.approximate},
        "dimensions": out,
    }


# --- realtime --------------------------------------------------------------------------------------


def realtime(conn: Conn, site: str, now: dt.datetime, minutes: int, limit: int) -> dict[str, Any]:
    """Sessions whose last event is in the last ``minutes``; page views by path this UTC hour and the one before.

    The rollups keep no per-minute visitor or path data: these are the closest
    exact figures they hold.
    """
    now = now.astimezone(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    active, with_views = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE pageviews > 0) FROM sessions"
        " WHERE site = %s AND last_seen > %s AND last_seen <= %s",
        (site, now - dt.timedelta(minutes=minutes), now),
    ).fetchone() or (0, 0)
    per_path: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for h, path, n in conn.execute(
        "SELECT hour, path, views FROM pageviews_hourly WHERE site = %s AND hour >= %s AND hour <= %s",
        (site, hour - HOUR, hour),
    ).fetchall():
        per_path[path][0 if h == hour else 1] += int(n)
    ordered = sorted(per_path.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
    return {
        "view": "realtime",
        "site": site,
        "now": iso(now),
        "window_minutes": minutes,
        "active_sessions": int(active),
        "active_sessions_with_pageviews": int(with_views),
        "hour": iso(hour),
        "pageviews_this_hour": sum(v[0] for v in per_path.values()),
        "pageviews_previous_hour": sum(v[1] for v in per_path.values()),
        "paths": [
            {"path": p, "views_this_hour": cur, "views_previous_hour": prev} for p, (cur, prev) in ordered[:limit]
        ],
    }
