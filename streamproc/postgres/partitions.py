"""Time partitions of the rollups and the ledger: create ahead, move out of DEFAULT, drop behind;
then the retention of ``sessions``, which has no partitions (:mod:`.retention`).

Planning is pure and lives in :mod:`streamproc.postgres.partition_plan` (re-exported
here). Execution (:func:`maintain`) runs each step in a transaction of its own, all
under one advisory lock per schema (held by a transaction of its own, so it works
through a transaction-pooling PgBouncer), so runs started on several hosts at once
do the work once. Partitions whose names do not follow the pattern are never touched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg
import psycopg.errors as pge
from psycopg import sql

from streamproc.errors import SchemaNotReady, SourceError
from streamproc.postgres.faults import first_line as _first_line
from streamproc.postgres.faults import translate
from streamproc.postgres.partition_plan import (
    DAILY_TABLES,
    DAY_MS,
    DEFAULT_RETENTION_DAYS,
    HOURLY_TABLES,
    LAYOUTS,
    LEDGER_TABLE,
    OPTIONAL_LAYOUTS,
    RETENTION_GROUPS,
    SKETCH_TABLES,
    Bound,
    Layout,
    Span,
    Step,
    TableState,
    Window,
    ledger_keep_from_ms,
    plan_table,
)
from streamproc.postgres.retention import RETAINED_LIKE, SESSIONS_TABLE, prune_sessions
from streamproc.postgres.session import Session, Timeouts, advisory_xact_lock, connect

__all__ = [
    "ATTEMPTS",
    "DAILY_TABLES",
    "DAY_MS",
    "DEFAULT_RETENTION_DAYS",
    "HOURLY_TABLES",
    "LAYOUTS",
    "LEDGER_TABLE",
    "LOCK_CLASS",
    "LOCK_TIMEOUT_MS",
    "OPTIONAL_LAYOUTS",
    "RETENTION_GROUPS",
    "RETRY_SLEEP_S",
    "SKETCH_TABLES",
    "Bound",
    "FirstEntries",
    "Layout",
    "Result",
    "Span",
    "Step",
    "TableState",
    "Window",
    "ledger_keep_from_ms",
    "lock_key",
    "maintain",
    "plan_table",
    "read_state",
]


LOCK_CLASS: Final = 0x5350_4D54  # "SPMT"; the second key is derived from the schema name
LOCK_TIMEOUT_MS: Final = 3000  # a waiting DDL statement queues the daemons behind it: keep it short
ATTEMPTS: Final = 3  # per step, on lock timeouts
RETRY_SLEEP_S: Final = 1.0


# --- execution ------------------------------------------------------------------------


@dataclass
class Result:
    schema: str
    dry_run: bool
    lock_held_elsewhere: bool = False  # another run holds the lock: nothing was done
    created: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    pruned: dict[str, int] = field(default_factory=dict)  # table -> rows deleted (dry run: would be)
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
    """Create partitions ahead, move rows out of DEFAULT, drop partitions past retention,
    then delete ``sessions`` rows whose last event is past ``sessions_daily``'s retention.

    ``first_entries(stream names)`` returns the first entry's ms of each stream
    still in Redis; it may raise :class:`SourceError`, and without it (or when
    it fails) no ledger partition is dropped. ``drop=False`` only creates (what
    ``setup``/``migrate`` may call) and deletes nothing. ``dry_run`` plans without the lock and
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
    if drop:
        days = retention_days.get(RETAINED_LIKE, DEFAULT_RETENTION_DAYS[RETAINED_LIKE])
        _prune(conn, result, when - dt.timedelta(days=days), dry_run)


def _prune(conn: psycopg.Connection[Any], result: Result, before: dt.datetime, dry_run: bool) -> None:
    """Sessions whose last event is past the retention; a failure is recorded and the run goes on."""
    try:
        result.pruned[SESSIONS_TABLE] = prune_sessions(conn, before, dry_run)
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        result.errors.append(f"prune {SESSIONS_TABLE}: {_first_line(exc)}")


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
        " a.privilege_type, a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " WHERE c.oid IN (to_regclass(%s), to_regclass(%s)) AND a.grantee <> c.relowner",
        (parent, parent, part),
    ).fetchall()
    table = sql.Identifier(part)
    # Role names come quoted from regrole, privileges are keywords: both from the catalog.
    for grantee in sorted({g for of_parent, g, _, _ in rows if not of_parent}):
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(table, sql.SQL(grantee)))
    for of_parent, grantee, privilege, grantable in rows:
        if of_parent:
            option = sql.SQL(" WITH GRANT OPTION" if grantable else "")
            grant = sql.SQL("GRANT {} ON {} TO {}{}").format(sql.SQL(privilege), table, sql.SQL(grantee), option)
            conn.execute(grant)


def _drop(conn: psycopg.Connection[Any], span: Span) -> int:
    """DROP the partition; briefly takes the parent ACCESS EXCLUSIVE (DETACH CONCURRENTLY
    is not allowed next to a DEFAULT partition), bounded by the lock timeout."""
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(span.name)))
    return 0
