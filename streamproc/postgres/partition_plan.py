"""Planning of time partitions, pure: catalog facts, the clock and the retention in, steps out.

Layout (``sql/002_partitioning.sql``, ``sql/010_partition_props_and_bots.sql``):
the time-bucketed rollups are partitioned by month (``<table>_pYYYYMM``, by
``hour`` or ``day``), the ledger ``applied_entries`` by UTC day
(``applied_entries_pYYYYMMDD``, by ``entry_ms`` in milliseconds), each with a
DEFAULT partition that catches rows no dated partition covers yet.
:func:`plan_table` says which partitions to create and to drop;
:mod:`streamproc.postgres.partitions` carries the steps out. Partitions whose
names do not follow the pattern are never planned.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from psycopg import sql

DAY_MS: Final = 86_400_000
_EPOCH: Final = dt.date(1970, 1, 1)

HOURLY_TABLES: Final = ("pageviews_hourly", "api_hourly", "api_latency_hourly", "conversions_hourly", "events_hourly")
DAILY_TABLES: Final = (
    "pageviews_daily",
    "path_visitors_daily",
    "visitors_daily",
    "sessions_daily",
    "dimensions_daily",
    "clicks_grid_daily",
    "clicks_selector_daily",
    "bots_daily",  # partitioned since sql/010
    "event_props_daily",  # partitioned since sql/010
)
# Approximate uniques (sql/approximate/): maintained when present.
SKETCH_TABLES: Final = (
    "visitors_daily_hll",
    "path_visitors_daily_hll",
    "dimension_visitors_daily_hll",
    "sessions_daily_hll",
)
LEDGER_TABLE: Final = "applied_entries"

# Days a rollup partition is kept after the end of its range. The ledger has no
# entry here: its partitions follow the ledger rule (see ledger_keep_from_ms).
DEFAULT_RETENTION_DAYS: Final[Mapping[str, int]] = {
    **dict.fromkeys(HOURLY_TABLES, 90),
    **dict.fromkeys(DAILY_TABLES, 400),
    **dict.fromkeys(SKETCH_TABLES, 400),
}
RETENTION_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "hourly": HOURLY_TABLES,
    "daily": DAILY_TABLES + SKETCH_TABLES,
}


class Bound(enum.Enum):
    """The partition column's type, and so how a UTC day boundary is written for it."""

    TIMESTAMPTZ = "timestamptz"
    DATE = "date"
    EPOCH_MS = "epoch ms"


@dataclass(frozen=True)
class Layout:
    table: str
    column: str
    bound: Bound
    monthly: bool  # else daily

    def span_at(self, day: dt.date) -> Span:
        """The partition range holding ``day``."""
        if not self.monthly:
            return Span(self, day, day + dt.timedelta(days=1))
        start = day.replace(day=1)
        return Span(self, start, (start + dt.timedelta(days=32)).replace(day=1))

    def parse(self, name: str) -> Span | None:
        """The range of a partition named by :attr:`Span.name`; None for any other name."""
        digits = 6 if self.monthly else 8
        m = re.fullmatch(re.escape(self.table) + rf"_p(\d{{{digits}}})", name)
        if m is None:
            return None
        try:
            day = dt.datetime.strptime(m.group(1) + ("01" if self.monthly else ""), "%Y%m%d").date()
        except ValueError:
            return None
        return self.span_at(day)

    def window(self, today: dt.date, w: Window) -> Iterator[Span]:
        """The ranges that should exist around ``today``: a little behind, more ahead."""
        span = self.span_at(today)
        back, ahead = (w.months_back, w.months_ahead) if self.monthly else (w.days_back, w.days_ahead)
        for _ in range(back):
            span = self.span_at(span.start - dt.timedelta(days=1))
        for _ in range(back + 1 + ahead):
            yield span
            span = self.span_at(span.end)

    def day_sql(self) -> sql.Composable:
        """SQL expression: the UTC day of a row, from the partition column."""
        col = sql.Identifier(self.column)
        if self.bound is Bound.TIMESTAMPTZ:
            return sql.SQL("({} AT TIME ZONE 'UTC')::date").format(col)
        if self.bound is Bound.DATE:
            return col
        return sql.SQL("DATE '1970-01-01' + ({} / {})::int").format(col, sql.Literal(DAY_MS))


LAYOUTS: Final = (
    *(Layout(t, "hour", Bound.TIMESTAMPTZ, monthly=True) for t in HOURLY_TABLES),
    *(Layout(t, "day", Bound.DATE, monthly=True) for t in DAILY_TABLES),
    Layout(LEDGER_TABLE, "entry_ms", Bound.EPOCH_MS, monthly=False),
)
OPTIONAL_LAYOUTS: Final = tuple(Layout(t, "day", Bound.DATE, monthly=True) for t in SKETCH_TABLES)


@dataclass(frozen=True)
class Span:
    """One partition's range, [start, end) in whole UTC days."""

    layout: Layout
    start: dt.date
    end: dt.date

    @property
    def name(self) -> str:
        return (
            f"{self.layout.table}_p{self.start:%Y%m}"
            if self.layout.monthly
            else f"{self.layout.table}_p{self.start:%Y%m%d}"
        )

    @property
    def end_at(self) -> dt.datetime:
        return dt.datetime.combine(self.end, dt.time(), dt.UTC)

    def value(self, day: dt.date) -> object:
        """A day boundary as a value of the partition column."""
        if self.layout.bound is Bound.TIMESTAMPTZ:
            return dt.datetime.combine(day, dt.time(), dt.UTC)
        if self.layout.bound is Bound.DATE:
            return day
        return (day - _EPOCH).days * DAY_MS

    def in_range(self) -> sql.Composable:
        return sql.SQL("{col} >= {lo} AND {col} < {hi}").format(
            col=sql.Identifier(self.layout.column),
            lo=sql.Literal(self.value(self.start)),
            hi=sql.Literal(self.value(self.end)),
        )

    def bound_sql(self) -> sql.Composable:
        return sql.SQL("FOR VALUES FROM ({}) TO ({})").format(
            sql.Literal(self.value(self.start)), sql.Literal(self.value(self.end))
        )


@dataclass(frozen=True)
class Window:
    """How far around today partitions are created ahead of the rows."""

    months_back: int = 1
    months_ahead: int = 3
    days_back: int = 1
    days_ahead: int = 7


# --- planning (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class TableState:
    """What the catalog says about one partitioned table."""

    layout: Layout
    partitions: frozenset[str]
    default: str | None  # the DEFAULT partition's name (None if someone dropped it)
    default_rows: Mapping[dt.date, int]  # UTC day -> rows of that day waiting in DEFAULT


@dataclass(frozen=True)
class Step:
    kind: Literal["create", "drop"]
    span: Span
    rows_from_default: int = 0  # create: rows the plan saw waiting in DEFAULT
    reason: str = ""  # drop: why


def plan_table(
    state: TableState,
    now: dt.datetime,
    *,
    keep_from: dt.datetime,
    drop_before: dt.datetime | None,
    reason: str = "",
    window: Window = Window(),
) -> list[Step]:
    """Partitions to create, then partitions to drop, for one table.

    Created: the window around ``now`` (except ranges entirely before
    ``keep_from``, which would only be dropped again) and every range that has
    rows waiting in DEFAULT, however old: moved into a partition of their own,
    they fall under the retention like any other rows. Dropped: managed
    partitions whose whole range ends at or before ``drop_before`` (None: drop
    nothing).
    """
    layout = state.layout
    have = {span for span in map(layout.parse, state.partitions) if span is not None}
    wanted: dict[Span, int] = {
        s: 0 for s in layout.window(now.astimezone(dt.UTC).date(), window) if s.end_at > keep_from
    }
    for day, rows in state.default_rows.items():
        span = layout.span_at(day)
        wanted[span] = wanted.get(span, 0) + rows
    steps = [Step("create", s, n) for s, n in sorted(wanted.items(), key=lambda kv: kv[0].start) if s not in have]
    if drop_before is not None:
        every = sorted(have | {step.span for step in steps}, key=lambda span: span.start)
        steps.extend(Step("drop", s, reason=reason) for s in every if s.end_at <= drop_before)
    return steps


def ledger_keep_from_ms(first_entry_ms: Mapping[str, int | None], now_ms: int, retention_s: int) -> int:
    """The README's ledger rule over every stream: keep ledger rows from
    min(first entry still in any stream, now - retention) on."""
    floor = now_ms - retention_s * 1000
    return min([floor, *(ms for ms in first_entry_ms.values() if ms is not None)])
