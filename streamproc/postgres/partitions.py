"""Time partitions of the rollups and the ledger: create ahead, move out of DEFAULT, drop behind.

Layout (``sql/002_partitioning.sql``): the time-bucketed rollups are partitioned
by month (``<table>_pYYYYMM``, by ``hour`` or ``day``), the ledger
``applied_entries`` by UTC day (``applied_entries_pYYYYMMDD``, by ``entry_ms``
in milliseconds), each with a DEFAULT partition that catches rows no dated
partition covers yet.

Planning is pure: catalog facts, the clock and the retention go in, a list of
partitions to create and to drop comes out (:func:`plan_table`). Execution
(:func:`maintain`) runs each step in a transaction of its own, all under one
advisory lock per schema (held by a transaction of its own, so it works through a
transaction-pooling PgBouncer), so runs started on several hosts at once do the work
once. Partitions whose names do not follow the pattern are never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import psycopg
import psycopg.errors as pge
from psycopg import sql

from streamproc.errors import SchemaNotReady, SourceError
from streamproc.postgres.faults import first_line as _first_line
from streamproc.postgres.faults import translate
from streamproc.postgres.session import Session, Timeouts, advisory_xact_lock, connect

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

LOCK_CLASS: Final = 0x5350_4D54  # "SPMT"; the second key is derived from the schema name
LOCK_TIMEOUT_MS: Final = 3000  # a waiting DDL statement queues the daemons behind it: keep it short
ATTEMPTS: Final = 3  # per step, on lock timeouts
RETRY_SLEEP_S: Final = 1.0


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


# --- execution ------------------------------------------------------------------------


@dataclass
class Result:
    schema: str
    dry_run: bool
    lock_held_elsewhere: bool = False  # another run holds the lock: nothing was done
    created: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    ledger_keep_from_ms: int | None = None
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rows_moved(self) -> int:
        return sum(int(c["rows_from_default"]) for c in self.created)


FirstEntries = Callable[[Sequence[str]], Mapping[str, int | None]]


def lock_key(schema: str) -> tuple[int, int]:
    """The advisory lock (two int4 keys) of one schema's maintenance, the same on every host."""
    digest = hashlib.blake2b(schema.encode(), digest_size=4).digest()
    return LOCK_CLASS, int.from_bytes(digest, "big", signed=True)


def maintain(
    database_url: str,
    schema: str,
    *,
    retention_days: Mapping[str, int] = DEFAULT_RETENTION_DAYS,
    ledger_retention_s: int = 7 * 86_400,
    first_entries: FirstEntries | None = None,
    drop: bool = True,
    dry_run: bool = False,
    wait: bool = False,
    now: dt.datetime | None = None,
    window: Window = Window(),
) -> Result:
    """Create partitions ahead, move rows out of DEFAULT, drop partitions past retention.

    ``first_entries(stream names)`` returns the first entry's ms of each stream
    still in Redis; it may raise :class:`SourceError`, and without it (or when
    it fails) no ledger partition is dropped. ``drop=False`` only creates (what
    ``setup``/``migrate`` may call). ``dry_run`` plans without the lock and
    changes nothing.
    """
    result = Result(schema=schema, dry_run=dry_run)
    try:
        with contextlib.ExitStack() as stack:
            if not dry_run:
                taken = stack.enter_context(
                    advisory_xact_lock(database_url, lock_key(schema), wait, "streamproc-maintain-lock")
                )
                if not taken:
                    result.lock_held_elsewhere = True
                    return result
            timeouts = Timeouts(statement_ms=0, lock_ms=LOCK_TIMEOUT_MS, idle_in_transaction_ms=0)
            conn = stack.enter_context(connect(database_url, schema, "streamproc-maintain", timeouts, autocommit=True))
            _maintain(conn, result, retention_days, ledger_retention_s, first_entries, drop, dry_run, now, window)
    except psycopg.Error as exc:
        raise translate(exc, "maintenance", schema) from exc
    return result


def _maintain(
    conn: Session,
    result: Result,
    retention_days: Mapping[str, int],
    ledger_retention_s: int,
    first_entries: FirstEntries | None,
    drop: bool,
    dry_run: bool,
    now: dt.datetime | None,
    window: Window,
) -> None:
    when = now or dt.datetime.now(dt.UTC)
    with conn.transaction():
        states = [read_state(conn, layout) for layout in LAYOUTS]  # first: fails on an unmigrated schema
        states += [read_state(conn, layout) for layout in OPTIONAL_LAYOUTS if _exists(conn, layout.table)]
        keep_ms = _ledger_bound(conn, result, ledger_retention_s, first_entries, when) if drop else None
    for state in states:
        layout = state.layout
        if layout.table == LEDGER_TABLE:
            floor = when - dt.timedelta(seconds=ledger_retention_s)
            cutoff = None if keep_ms is None else dt.datetime.fromtimestamp(keep_ms / 1000, dt.UTC)
            why = f"entirely before the ledger bound {cutoff:%Y-%m-%dT%H:%M:%SZ}" if cutoff else ""
        else:
            days = retention_days.get(layout.table, DEFAULT_RETENTION_DAYS[layout.table])
            floor = when - dt.timedelta(days=days)
            cutoff = floor if drop else None
            why = f"older than the {days}-day retention"
        for step in plan_table(state, when, keep_from=floor, drop_before=cutoff, reason=why, window=window):
            _apply(conn, result, step, state.default, dry_run)


def _exists(conn: psycopg.Connection[Any], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def read_state(conn: psycopg.Connection[Any], layout: Layout) -> TableState:
    """Attached partitions, and the days of the rows sitting in DEFAULT."""
    row = conn.execute(
        "SELECT p.partdefid, (SELECT relname FROM pg_class WHERE oid = p.partdefid)"
        " FROM pg_partitioned_table p WHERE p.partrelid = to_regclass(%s)",
        (layout.table,),
    ).fetchone()
    if row is None:
        raise SchemaNotReady(f"{layout.table} is not a partitioned table: run `streamproc migrate` first")
    names = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (layout.table,),
    ).fetchall()
    default_rows: dict[dt.date, int] = {}
    if row[1] is not None:
        query = sql.SQL("SELECT {day}, count(*) FROM {default} GROUP BY 1").format(
            day=layout.day_sql(), default=sql.Identifier(row[1])
        )
        default_rows = {day: int(n) for day, n in conn.execute(query).fetchall()}
    return TableState(layout, frozenset(n for (n,) in names), row[1], default_rows)


def _ledger_bound(
    conn: psycopg.Connection[Any], result: Result, retention_s: int, first: FirstEntries | None, now: dt.datetime
) -> int | None:
    if first is None:
        result.warnings.append("no Redis to ask for the streams' first entries: ledger partitions not dropped")
        return None
    streams = [name for (name,) in conn.execute("SELECT name FROM streams ORDER BY name").fetchall()]
    try:
        firsts = first(streams)
    except SourceError as exc:
        result.warnings.append(f"ledger partitions not dropped, the streams' first entries are unknown: {exc}")
        return None
    result.ledger_keep_from_ms = ledger_keep_from_ms(firsts, int(now.timestamp() * 1000), retention_s)
    return result.ledger_keep_from_ms


def _apply(conn: psycopg.Connection[Any], result: Result, step: Step, default: str | None, dry_run: bool) -> None:
    """One step, retried on lock timeouts; a failure is recorded and the run goes on."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if step.kind == "drop":
                rows = 0 if dry_run else _drop(conn, step.span)
            else:
                rows = step.rows_from_default if dry_run else _create(conn, step.span, default)
        except (pge.LockNotAvailable, pge.DeadlockDetected) as exc:
            if attempt == ATTEMPTS:
                result.errors.append(f"{step.kind} {step.span.name}: {_first_line(exc)} (after {ATTEMPTS} attempts)")
                return
            time.sleep(RETRY_SLEEP_S * attempt)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            result.errors.append(f"{step.kind} {step.span.name}: {_first_line(exc)}")
            return
        else:
            span = step.span
            entry = {"table": span.layout.table, "partition": span.name, "from": str(span.start), "to": str(span.end)}
            if step.kind == "drop":
                result.dropped.append({**entry, "reason": step.reason})
            else:
                result.created.append({**entry, "rows_from_default": rows})
            return


def _create(conn: psycopg.Connection[Any], span: Span, default_name: str | None) -> int:
    """CREATE, move the range's rows out of DEFAULT, ATTACH: one transaction.

    The parent is locked EXCLUSIVE first (reads go on, writes wait): a writer
    that planned its INSERT before the ATTACH would still route a row of the new
    range into DEFAULT and fail. Locking the parent before DEFAULT is the order
    writers take them in, so this cannot deadlock with them.
    """
    parent, part = sql.Identifier(span.layout.table), sql.Identifier(span.name)
    moved = 0
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(parent))
        # No index yet: ATTACH builds the primary key once, after the rows are in.
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(part, parent))
        _copy_privileges(conn, span.layout.table, span.name)
        if default_name is not None:
            default = sql.Identifier(default_name)
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(default))
            # Always, not only when the plan saw rows there: one may have arrived since.
            moved = conn.execute(
                sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {}").format(part, default, span.in_range())
            ).rowcount
            conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(default, span.in_range()))
        conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} ").format(parent, part) + span.bound_sql())
    return moved


def _copy_privileges(conn: psycopg.Connection[Any], parent: str, part: str) -> None:
    """Give a new partition exactly its parent's grants. Default privileges would grant on it
    whatever the owner's defaults say, e.g. SELECT on ledger partitions to the reader role."""
    rows = conn.execute(
        "SELECT c.oid = to_regclass(%s), CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,"
        " a.privilege_type FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " WHERE c.oid IN (to_regclass(%s), to_regclass(%s)) AND a.grantee <> c.relowner",
        (parent, parent, part),
    ).fetchall()
    table = sql.Identifier(part)
    # Role names come quoted from regrole, privileges are keywords: both from the catalog.
    for grantee in sorted({g for of_parent, g, _ in rows if not of_parent}):
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(table, sql.SQL(grantee)))
    for of_parent, grantee, privilege in rows:
        if of_parent:
            conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(sql.SQL(privilege), table, sql.SQL(grantee)))


def _drop(conn: psycopg.Connection[Any], span: Span) -> int:
    """DROP the partition; briefly takes the parent ACCESS EXCLUSIVE (DETACH CONCURRENTLY
    is not allowed next to a DEFAULT partition), bounded by the lock timeout."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(span.name)))
    return 0
