"""Rollups declared as data.

A rollup is a target table, its key columns and its measures, each measure
with a merge rule. A rollup without measures is a *set*: rows are inserted
once and never updated (exact unique visitors, sessions). A set with a
*sketch* column keeps its members as a HyperLogLog instead (approximate
uniques): the last key column is hashed into one sketch per remaining key,
and sketches merge inside the upsert (``hll_union``). The in-memory
accumulation (:class:`Shard`) and the upsert SQL are both derived from the
declaration, so adding a rollup means adding one declaration, one migration
and one line in :mod:`streamproc.core.fold`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from streamproc.core.wire import array_literal


class Kind(enum.Enum):
    """Column kinds: the SQL type, the type sent over the wire and how Postgres turns
    the one into the other. Times travel as integers (cheap to build and to send) and
    become timestamps or dates in the statement, with exact integer arithmetic."""

    TEXT = ("text",)
    SMALLINT = ("smallint",)
    BIGINT = ("bigint",)
    FLOAT = ("double precision",)
    NUMERIC = ("numeric",)
    HOUR = ("timestamptz", "bigint", "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 hour')")  # hours since the epoch
    DAY = ("date", "bigint", "(DATE '1970-01-01' + {}::integer)")  # days since the epoch
    TIME_MS = ("timestamptz", "bigint", "(TIMESTAMPTZ 'epoch' + {} * INTERVAL '1 millisecond')")  # ms since the epoch

    def __init__(self, sql_type: str, wire_type: str | None = None, from_wire: str = "{}") -> None:
        self.sql_type = sql_type
        self.wire_type = wire_type or sql_type
        self.from_wire = from_wire


class Merge(enum.Enum):
    SUM = "sum"
    MIN = "min"
    MAX = "max"


_SUM, _MIN = Merge.SUM, Merge.MIN


@dataclass(frozen=True)
class Col:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Measure:
    name: str
    kind: Kind
    merge: Merge = Merge.SUM


@dataclass(frozen=True)
class Rollup:
    table: str
    keys: tuple[Col, ...]
    measures: tuple[Measure, ...] = ()
    doc: str = ""
    payload: tuple[Col, ...] = ()  # set rollups only: stored with the key, never updated
    sketch: str = ""  # set rollups only: the HyperLogLog column the last key column is added to

    @functools.cached_property
    def merges(self) -> tuple[Merge, ...]:
        return tuple(m.merge for m in self.measures)

    @property
    def is_set(self) -> bool:
        return not self.measures

    @property
    def columns(self) -> tuple[Col | Measure, ...]:
        return (*self.keys, *self.payload, *self.measures)

    def upsert_sql(self) -> str:
        """One multi-row upsert fed by arrays, applied in key order.

        Every writer applies rows in the same (key) order, so two workers that
        touch overlapping keys wait on each other instead of deadlocking.
        """
        names = ", ".join(c.name for c in self.columns)
        arrays = ", ".join(f"%t::{c.kind.wire_type}[]" for c in self.columns)
        if self.sketch:
            return self._sketch_sql(arrays, names)
        values = ", ".join(_value(c) for c in self.columns)
        keys = ", ".join(c.name for c in self.keys)
        order = ", ".join(f"t.{c.name}" for c in self.keys)
        head = (
            f"INSERT INTO {self.table} ({names}) "
            f"SELECT {values} FROM unnest({arrays}) AS t({names}) ORDER BY {order} "
            f"ON CONFLICT ({keys}) DO "
        )
        if self.is_set:
            return head + "NOTHING"
        sets = ", ".join(_merge_expr(self.table, m) for m in self.measures)
        return head + f"UPDATE SET {sets}"

    def _sketch_sql(self, arrays: str, names: str) -> str:
        """Members grouped into one sketch per key, merged with the stored one (``hll`` extension)."""
        *group, member = self.keys
        keys = ", ".join(c.name for c in group)
        values = ", ".join(_value(c) for c in group)
        by = ", ".join(f"t.{c.name}" for c in group)
        s = self.sketch
        return (
            f"INSERT INTO {self.table} ({keys}, {s}) "
            f"SELECT {values}, hll_add_agg(hll_hash_bigint(t.{member.name})) "
            f"FROM unnest({arrays}) AS t({names}) GROUP BY {by} ORDER BY {by} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {s} = hll_union({self.table}.{s}, EXCLUDED.{s})"
        )

    def parameters(self, columns: Iterable[tuple[Any, ...]]) -> list[str]:
        """The parameters of :meth:`upsert_sql`: one array literal per column."""
        return [array_literal(values, c.kind is Kind.TEXT) for c, values in zip(self.columns, columns, strict=True)]


def _value(c: Col | Measure) -> str:
    """The column's value in the statement, from the array element ``t.<name>``."""
    return c.kind.from_wire.format(f"t.{c.name}")


def _merge_expr(table: str, m: Measure) -> str:
    old, new = f"{table}.{m.name}", f"EXCLUDED.{m.name}"
    if m.merge is Merge.SUM:
        return f"{m.name} = {old} + {new}"
    fn = "LEAST" if m.merge is Merge.MIN else "GREATEST"
    return f"{m.name} = {fn}({old}, {new})"


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


# --- in-memory accumulation --------------------------------------------------


@dataclass
class Shard:
    """Pre-aggregated rows of one rollup for one batch.

    Each key appears once, which a multi-row upsert requires (it may not touch
    the same row twice).
    """

    rollup: Rollup
    rows: dict[tuple[Any, ...], list[Any]] = field(default_factory=dict)
    members: dict[tuple[Any, ...], tuple[Any, ...]] = field(default_factory=dict)

    def count(self, key: tuple[Any, ...], n: int = 1) -> None:
        """Add ``n`` to a rollup whose only measure is a sum."""
        count_into(self.rows, key, n)

    def merge(self, key: tuple[Any, ...], values: tuple[Any, ...]) -> None:
        """Merge a full measure tuple into the row at ``key``."""
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = list(values)
            return
        for i, merge in enumerate(self.rollup.merges):
            if merge is _SUM:
                row[i] += values[i]
            elif merge is _MIN:
                if values[i] < row[i]:
                    row[i] = values[i]
            elif values[i] > row[i]:
                row[i] = values[i]

    def without_sums_of(self, repeats: Shard) -> Shard:
        """A copy with the sums of ``repeats`` (a fold of events that repeat ones already
        counted) taken out; their set members, minima and maxima change nothing and
        stay. A row whose counts (the integer sums) fall to zero was touched by repeats
        only, and is dropped with whatever minimum or maximum it carried. ``self`` is
        unchanged (a retried transaction starts again from it)."""
        measures = self.rollup.measures
        counts = [i for i, m in enumerate(measures) if m.merge is Merge.SUM and m.kind is Kind.BIGINT]
        rows = dict(self.rows)  # rows the repeats touch get copies below; the others are shared
        for key, values in repeats.rows.items():
            row = rows[key] = list(rows[key])
            for i, m in enumerate(measures):
                if m.merge is Merge.SUM:
                    row[i] -= values[i]
            if not any(row[i] for i in counts):
                del rows[key]
        return Shard(self.rollup, rows, self.members)

    def add(self, key: tuple[Any, ...], payload: tuple[Any, ...] = ()) -> None:
        """Add a member (and its payload, first one wins) to a set rollup."""
        if key not in self.members:
            self.members[key] = payload

    def __len__(self) -> int:
        return len(self.members) if self.rollup.is_set else len(self.rows)

    def columns(self) -> list[tuple[Any, ...]]:
        """The rows as columns (keys, payload or measures), transposed in C without a tuple per row."""
        rows: dict[tuple[Any, ...], Any] = self.members if self.rollup.is_set else self.rows
        if not rows:
            return []
        keys = list(zip(*rows, strict=True))
        if self.rollup.is_set and not self.rollup.payload:
            return keys
        return keys + list(zip(*rows.values(), strict=True))


def count_into(rows: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], n: int = 1) -> None:
    """:meth:`Shard.count` on a shard's rows, for a caller that holds them (the fold's hot path)."""
    row = rows.get(key)
    if row is None:
        rows[key] = [n]
    else:
        row[0] += n


def rollups(approximate: bool = False) -> tuple[Rollup, ...]:
    """The rollups a worker writes, in the order every worker writes them (no deadlocks)."""
    if not approximate:
        return ALL
    return (*(r for r in ALL if r not in EXACT_UNIQUES), *APPROXIMATE_UNIQUES)


def new_shards(approximate: bool = False) -> dict[str, Shard]:
    return {r.table: Shard(r) for r in rollups(approximate)}


ZERO = Decimal(0)
