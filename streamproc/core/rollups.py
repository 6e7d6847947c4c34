"""Rollups declared as data.

A rollup is a target table, its key columns and its measures, each measure
with a merge rule (:mod:`streamproc.core.rollup_decl`). The in-memory
accumulation (:class:`Shard`, :mod:`streamproc.core.shard`) and the upsert SQL
are both derived from the declaration, so adding a rollup means adding one
declaration here, one migration and one line in :mod:`streamproc.core.fold`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

# Re-exported (``as``): callers import every rollup name from this module.
from streamproc.core.rollup_decl import Col as Col
from streamproc.core.rollup_decl import Kind as Kind
from streamproc.core.rollup_decl import Measure as Measure
from streamproc.core.rollup_decl import Merge as Merge
from streamproc.core.rollup_decl import Rollup as Rollup
from streamproc.core.shard import Shard as Shard
from streamproc.core.shard import count_into as count_into

# --- the rollups -----------------------------------------------------------

SITE = Col("site", Kind.TEXT)
HOUR = Col("hour", Kind.HOUR)
DAY = Col("day", Kind.DAY)
PATH = Col("path", Kind.TEXT)
VISITOR = Col("visitor", Kind.BIGINT)
SESSION = Col("session", Kind.BIGINT)
API_KEY = (SITE, HOUR, Col("method", Kind.TEXT), Col("route", Kind.TEXT), Col("status_class", Kind.SMALLINT))

PAGEVIEWS_HOURLY = Rollup(
    "pageviews_hourly",
    (SITE, HOUR, PATH),
    (Measure("views", Kind.BIGINT),),
    "Page views per site, path and UTC hour.",
)
PAGEVIEWS_DAILY = Rollup(
    "pageviews_daily",
    (SITE, DAY, PATH),
    (Measure("views", Kind.BIGINT),),
    "Page views per site, path and UTC day.",
)
PATH_VISITORS = Rollup(
    "path_visitors_daily",
    (SITE, DAY, PATH, VISITOR),
    (),
    "Set: hashed visitors that viewed a path on a UTC day (exact uniques).",
)
DIMENSION_NAMES: Final = (
    "referrer",
    "device",
    "browser",
    "os",
    "country",
    "utm_source",
    "utm_medium",
    "utm_campaign",
)
SITE_VISITORS = Rollup(
    "visitors_daily",
    (SITE, DAY, VISITOR, Col("profile", Kind.BIGINT)),
    (),
    "Set: hashed visitors with at least one page view on a UTC day, one row per distinct"
    " combination of dimension values they came with (exact visitors per site and per"
    " dimension value).",
    payload=tuple(Col(name, Kind.TEXT) for name in DIMENSION_NAMES),
)
SITE_SESSIONS = Rollup(
    "sessions_daily",
    (SITE, DAY, SESSION),
    (),
    "Set: hashed sessions with at least one page view on a UTC day.",
)
DIMENSIONS = Rollup(
    "dimensions_daily",
    (SITE, DAY, Col("dimension", Kind.TEXT), Col("value", Kind.TEXT)),
    (Measure("views", Kind.BIGINT),),
    "Page views per site, UTC day and dimension value (referrer host, device, ...).",
)
CLICK_GRID = Rollup(
    "clicks_grid_daily",
    (SITE, DAY, PATH, Col("cell_x", Kind.SMALLINT), Col("cell_y", Kind.SMALLINT)),
    (Measure("clicks", Kind.BIGINT),),
    "Clicks per site, UTC day, path and heatmap grid cell.",
)
CLICK_SELECTORS = Rollup(
    "clicks_selector_daily",
    (SITE, DAY, PATH, Col("selector", Kind.TEXT)),
    (Measure("clicks", Kind.BIGINT),),
    "Clicks per site, UTC day, path and CSS selector.",
)
API_REQUESTS = Rollup(
    "api_hourly",
    API_KEY,
    (
        Measure("requests", Kind.BIGINT),
        Measure("errors", Kind.BIGINT),
        Measure("duration_sum_ms", Kind.FLOAT),
        Measure("duration_min_ms", Kind.FLOAT, Merge.MIN),
        Measure("duration_max_ms", Kind.FLOAT, Merge.MAX),
    ),
    "API requests per site, UTC hour, method, route and status class.",
)
API_LATENCY = Rollup(
    "api_latency_hourly",
    (*API_KEY, Col("bucket", Kind.SMALLINT)),
    (Measure("requests", Kind.BIGINT),),
    "Mergeable latency histogram: requests per log-spaced duration bucket.",
)
CONVERSIONS = Rollup(
    "conversions_hourly",
    (SITE, HOUR, Col("name", Kind.TEXT), Col("currency", Kind.TEXT)),
    (Measure("conversions", Kind.BIGINT), Measure("revenue", Kind.NUMERIC)),
    "Conversions and exact revenue per site, UTC hour, name and currency.",
)
SESSIONS = Rollup(
    "sessions",
    (SITE, SESSION),
    (
        Measure("first_seen", Kind.TIME_MS, Merge.MIN),
        Measure("last_seen", Kind.TIME_MS, Merge.MAX),
        Measure("pageviews", Kind.BIGINT),
        Measure("events", Kind.BIGINT),
    ),
    "Per session: first and last event time, page views and events.",
)
BOTS = Rollup(
    "bots_daily",
    (SITE, DAY, Col("bot", Kind.TEXT)),
    (Measure("events", Kind.BIGINT),),
    "Page views and clicks whose user agent is a bot (crawler, monitor, HTTP library, headless"
    " browser), per site, UTC day and bot name: filtered out of every other rollup.",
)
EVENT_PROPS = Rollup(
    "event_props_daily",
    (SITE, DAY, Col("name", Kind.TEXT), Col("key", Kind.TEXT), Col("value", Kind.TEXT)),
    (Measure("events", Kind.BIGINT),),
    "Custom events per site, UTC day, name, property key and value (streamproc.core.props).",
)
EVENTS = Rollup(
    "events_hourly",
    (SITE, HOUR, Col("type", Kind.TEXT), Col("name", Kind.TEXT)),
    (Measure("events", Kind.BIGINT),),
    "Events per site, UTC hour, type and custom event name ('' when none).",
)

# Approximate uniques (``uniques = "approximate"``): one HyperLogLog per key instead of one row per
# member. Needs the ``hll`` extension (sql/approximate/).
PATH_VISITORS_HLL = Rollup(
    "path_visitors_daily_hll",
    (SITE, DAY, PATH, VISITOR),
    (),
    "HyperLogLog of the hashed visitors that viewed a path on a UTC day (approximate uniques).",
    sketch="visitors",
)
SITE_VISITORS_HLL = Rollup(
    "visitors_daily_hll",
    (SITE, DAY, VISITOR),
    (),
    "HyperLogLog of the hashed visitors with a page view on a UTC day (approximate uniques).",
    sketch="visitors",
)
DIMENSION_VISITORS_HLL = Rollup(
    "dimension_visitors_daily_hll",
    (SITE, DAY, Col("dimension", Kind.TEXT), Col("value", Kind.TEXT), VISITOR),
    (),
    "HyperLogLog of the hashed visitors per dimension value and UTC day (approximate uniques).",
    sketch="visitors",
)
SITE_SESSIONS_HLL = Rollup(
    "sessions_daily_hll",
    (SITE, DAY, SESSION),
    (),
    "HyperLogLog of the hashed sessions with a page view on a UTC day (approximate uniques).",
    sketch="sessions",
)
EXACT_UNIQUES: Final = (PATH_VISITORS, SITE_VISITORS, SITE_SESSIONS)
APPROXIMATE_UNIQUES: Final = (PATH_VISITORS_HLL, SITE_VISITORS_HLL, DIMENSION_VISITORS_HLL, SITE_SESSIONS_HLL)

ALL: Final = (
    PAGEVIEWS_HOURLY,
    PAGEVIEWS_DAILY,
    PATH_VISITORS,
    SITE_VISITORS,
    SITE_SESSIONS,
    DIMENSIONS,
    CLICK_GRID,
    CLICK_SELECTORS,
    API_REQUESTS,
    API_LATENCY,
    CONVERSIONS,
    SESSIONS,
    EVENTS,
    BOTS,
    EVENT_PROPS,
)


def rollups(approximate: bool = False) -> tuple[Rollup, ...]:
    """The rollups a worker writes, in the order every worker writes them (no deadlocks)."""
    if not approximate:
        return ALL
    return (*(r for r in ALL if r not in EXACT_UNIQUES), *APPROXIMATE_UNIQUES)


def new_shards(approximate: bool = False) -> dict[str, Shard]:
    return {r.table: Shard(r) for r in rollups(approximate)}


ZERO = Decimal(0)
