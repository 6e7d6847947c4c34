"""Time partitions and retention (sql/002_partitioning.sql, streamproc/postgres/partitions.py, `streamproc maintain`).

Real Postgres and Redis; the `schema` fixture migrates to the latest version, so
every test here starts from partitioned tables with only their DEFAULT partitions.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import typer
from typer.testing import CliRunner, Result

from streamproc.cli.app import app
from streamproc.cli.maintain import LOCKED, parse_retain
from streamproc.config import Settings
from streamproc.dev.synth import Generator, SynthEntry
from streamproc.postgres import migrate as migrate_mod
from streamproc.postgres import partitions as P
from tests.conftest import Daemons, daemon_env, wait_for
from tests.test_crash import assert_totals, log_lines
from tests.test_ops import clean_env

DAY = dt.timedelta(days=1)
DAY_MS = 86_400_000
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
TABLES = (*P.HOURLY_TABLES, *P.DAILY_TABLES, P.LEDGER_TABLE)
PARTITIONED_BY_002 = tuple(t for t in TABLES if t not in ("bots_daily", "event_props_daily"))  # these since 010
WINDOW = len(P.HOURLY_TABLES + P.DAILY_TABLES) * 5 + 9  # partitions of a first run: 5 months, 9 ledger days
runner = CliRunner()


def maintain(settings: Settings, *args: str, redis_url: str | None = None) -> Result:
    """`streamproc maintain ARGS` in-process, against this test's servers, schema and stream."""
    conn = ["--database-url", settings.database_url, "--schema", settings.db_schema]
    conn += ["--redis-url", redis_url or settings.redis_url, "--streams", ",".join(settings.streams)]
    return runner.invoke(app, ["maintain", *args, *conn], env=clean_env())


def maintain_json(settings: Settings, *args: str, redis_url: str | None = None) -> dict[str, Any]:
    res = maintain(settings, "--json", *args, redis_url=redis_url)
    assert res.exit_code == 0, res.stdout + res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    assert data["errors"] == [], data["errors"]
    return data


def partitions_of(pg: psycopg.Connection[Any], table: str) -> set[str]:
    rows = pg.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
        (table,),
    ).fetchall()
    return {name for (name,) in rows}


def rows_by_partition(pg: psycopg.Connection[Any], table: str) -> dict[str, int]:
    rows = pg.execute(f"SELECT tableoid::regclass::text, count(*) FROM {table} GROUP BY 1").fetchall()
    return {name: n for name, n in rows}


def catalog(pg: psycopg.Connection[Any]) -> dict[str, Any]:
    """Every partition of every partitioned table, and where the rows are."""
    return {t: (sorted(partitions_of(pg, t)), rows_by_partition(pg, t)) for t in TABLES}


def month_start(day: dt.date, shift: int = 0) -> dt.date:
    index = day.year * 12 + day.month - 1 + shift
    return dt.date(index // 12, index % 12 + 1, 1)


def ago(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


def add_pageviews(pg: psycopg.Connection[Any], *when: dt.datetime, views: int = 1) -> None:
    for i, t in enumerate(when):
        hour = t.replace(minute=0, second=0, microsecond=0)
        pg.execute("INSERT INTO pageviews_hourly VALUES ('s', %s, %s, %s)", (hour, f"/{i}", views))
        pg.execute("INSERT INTO pageviews_daily VALUES ('s', %s, %s, %s)", (hour.date(), f"/{i}", views))


# --- pure rules ---------------------------------------------------------------------------


def test_plan_creates_window_and_default_ranges_and_drops_expired() -> None:
    """The window around today is created (minus ranges already past retention), every range with
    rows in DEFAULT is created however old, existing partitions are not created again, and a
    managed partition is dropped only when its whole range ends at or before the cutoff;
    partitions with other names are never touched."""
    layout = next(lay for lay in P.LAYOUTS if lay.table == "pageviews_daily")
    now = dt.datetime(2026, 5, 10, 12, tzinfo=dt.UTC)
    state = P.TableState(
        layout,
        frozenset({"pageviews_daily_p202605", "pageviews_daily_p202501", "pageviews_daily_manual", "x_p202001"}),
        "pageviews_daily_default",
        {dt.date(2024, 2, 3): 5, dt.date(2024, 2, 20): 2, dt.date(2026, 3, 31): 1},
    )
    cutoff = dt.datetime(2025, 2, 1, tzinfo=dt.UTC)
    steps = P.plan_table(state, now, keep_from=cutoff, drop_before=cutoff, reason="old")
    created = [(s.span.name, s.rows_from_default) for s in steps if s.kind == "create"]
    dropped = [s.span.name for s in steps if s.kind == "drop"]
    assert created == [
        ("pageviews_daily_p202402", 7),
        ("pageviews_daily_p202603", 1),
        ("pageviews_daily_p202604", 0),
        ("pageviews_daily_p202606", 0),
        ("pageviews_daily_p202607", 0),
        ("pageviews_daily_p202608", 0),
    ]
    assert dropped == ["pageviews_daily_p202402", "pageviews_daily_p202501"]  # p202501 ends 2025-02-01: gone
    # Nothing dropped without a cutoff (the ledger when Redis cannot be asked).
    assert all(s.kind == "create" for s in P.plan_table(state, now, keep_from=cutoff, drop_before=None))

    ledger = P.LAYOUTS[-1]
    empty = P.TableState(ledger, frozenset(), "applied_entries_default", {})
    names = [s.span.name for s in P.plan_table(empty, now, keep_from=now - 7 * DAY, drop_before=None)]
    assert names == [f"applied_entries_p{d:%Y%m%d}" for d in (dt.date(2026, 5, 9) + i * DAY for i in range(9))]


def test_ledger_bound_is_the_oldest_of_first_entries_and_retention() -> None:
    """min(first entry still in any stream, now - retention); streams without entries do not lower it."""
    now = 1_000 * DAY_MS
    assert P.ledger_keep_from_ms({"a": None}, now, 7 * 86_400) == now - 7 * DAY_MS
    assert P.ledger_keep_from_ms({"a": now - DAY_MS, "b": now - 9 * DAY_MS, "c": None}, now, 86_400 * 7) == (
        now - 9 * DAY_MS
    )


def test_retain_option_parsing() -> None:
    """`--retain` takes TABLE=DAYS or a group (hourly/daily); a named table beats its group in any
    order; the ledger, unknown tables and bad numbers are refused."""
    got = parse_retain(["pageviews_daily=800", "daily=30", "hourly=7"])
    assert got["pageviews_daily"] == 800 and got["sessions_daily"] == 30 and got["events_hourly"] == 7
    assert parse_retain([]) == dict(P.DEFAULT_RETENTION_DAYS)
    for bad in ("applied_entries=3", "nope=3", "pageviews_daily=0", "pageviews_daily", "daily=x"):
        with pytest.raises(typer.BadParameter):
            parse_retain([bad])


# --- migration ------------------------------------------------------------------------------


def dummy_rows(conn: psycopg.Connection[Any], table: str, n: int) -> None:
    """``n`` rows of any shape, the time column spread over about four months."""
    cols = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    base = dt.datetime(2026, 1, 31, 23, tzinfo=dt.UTC)
    for i in range(n):
        values: list[Any] = []
        for name, kind in cols:
            when = base + dt.timedelta(days=37 * (i % 4), hours=i)
            values.append(
                1
                if name == "stream_id"
                else int(when.timestamp() * 1000) + i
                if name == "entry_ms"
                else {
                    "text": f"v{i}",
                    "bigint": i,
                    "smallint": i % 100,
                    "double precision": i / 3,
                    "numeric": Decimal(i) / 8,
                    "timestamp with time zone": when,
                    "date": when.date(),
                }[kind]
            )
        placeholders = ", ".join(["%s"] * len(values))
        conn.execute(f"INSERT INTO {table} VALUES ({placeholders})", values)


def test_migration_002_converts_tables_and_keeps_rows(database_url: str, ns: str, monkeypatch) -> None:
    """A schema at 001 with rows in every table: 002 makes each time-bucketed table and the ledger
    a partitioned table of the same name with the same columns, primary key (and the ledger's
    foreign key), every row kept (in DEFAULT); upserts through the parent still conflict on the
    key; the tables without a time key stay plain tables."""
    everything = migrate_mod.load_migrations()
    assert [m.version for m in everything[:2]] == [1, 2]
    monkeypatch.setattr(migrate_mod, "load_migrations", lambda directory=None: everything[:1])
    options = f"-c search_path={ns}"
    try:
        assert [m.version for m in migrate_mod.migrate(database_url, ns)] == [1]
        monkeypatch.undo()
        with psycopg.connect(database_url, options=options, autocommit=True) as conn:
            conn.execute("INSERT INTO streams (name) VALUES ('s')")
            for table in PARTITIONED_BY_002:
                dummy_rows(conn, table, 12)

            def shape(table: str) -> tuple[Any, ...]:
                cols = conn.execute(
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
                    (table,),
                ).fetchall()
                keys = conn.execute(
                    "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = %s::regclass ORDER BY 1, 2",
                    (table,),
                ).fetchall()
                return tuple(cols), tuple(keys)

            before = {t: (shape(t), sorted(conn.execute(f"SELECT * FROM {t}").fetchall())) for t in PARTITIONED_BY_002}

        monkeypatch.setattr(migrate_mod, "load_migrations", lambda directory=None: everything[:2])
        assert [m.version for m in migrate_mod.migrate(database_url, ns)] == [2]
        monkeypatch.undo()
        with psycopg.connect(database_url, options=options, autocommit=True) as conn:
            for table in PARTITIONED_BY_002:
                kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
                assert kind == ("p",), table
                assert (shape(table), sorted(conn.execute(f"SELECT * FROM {table}").fetchall())) == before[table]
                assert partitions_of(conn, table) == {f"{table}_default"}
                assert conn.execute(f"SELECT count(*) FROM {table}_default").fetchone() == (12,)
            for table in ("sessions", "producer_ids", "streams", "schema_migrations"):
                assert conn.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone() == (
                    "r",
                )
            again = conn.execute(
                "INSERT INTO pageviews_daily SELECT * FROM pageviews_daily ON CONFLICT (site, day, path)"
                " DO UPDATE SET views = pageviews_daily.views + EXCLUDED.views"
            )
            assert again.rowcount == 12
            assert conn.execute("SELECT sum(views) FROM pageviews_daily").fetchone() == (2 * sum(range(12)),)
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute("INSERT INTO applied_entries VALUES (99, 1, 1)")
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


# --- maintain ---------------------------------------------------------------------------------


def test_maintain_creates_partitions_ahead_and_is_idempotent(make_settings, schema, pg) -> None:
    """A first run creates monthly rollup partitions from one month back to three ahead and daily
    ledger partitions from one day back to seven ahead; a second run has nothing to do."""
    settings = make_settings()
    data = maintain_json(settings)
    today = dt.datetime.now(dt.UTC).date()
    months = [month_start(today, k) for k in range(-1, 4)]
    for table in (*P.HOURLY_TABLES, *P.DAILY_TABLES):
        assert partitions_of(pg, table) == {f"{table}_default", *(f"{table}_p{m:%Y%m}" for m in months)}
    days = [today + k * DAY for k in range(-1, 8)]
    assert partitions_of(pg, "applied_entries") == {"applied_entries_default"} | {
        f"applied_entries_p{d:%Y%m%d}" for d in days
    }
    assert len(data["created"]) == WINDOW and data["dropped"] == [] and data["rows_moved"] == 0
    again = maintain_json(settings)
    assert again["created"] == [] and again["dropped"] == []


def test_rows_land_on_the_right_side_of_partition_boundaries(make_settings, schema, pg) -> None:
    """Rows on either side of a month (and, for the ledger, a day) boundary go to the two
    partitions, and queries over the parent count both."""
    maintain_json(make_settings())
    edge = dt.datetime.combine(month_start(dt.datetime.now(dt.UTC).date()), dt.time(), dt.UTC)
    last_hour, first_hour = edge - dt.timedelta(hours=1), edge
    pg.execute("INSERT INTO pageviews_hourly VALUES ('s', %s, '/', 2), ('s', %s, '/', 3)", (last_hour, first_hour))
    pg.execute(
        "INSERT INTO pageviews_daily VALUES ('s', %s, '/', 2), ('s', %s, '/', 3)", (last_hour.date(), first_hour.date())
    )
    before, after = f"p{last_hour:%Y%m}", f"p{first_hour:%Y%m}"
    assert rows_by_partition(pg, "pageviews_hourly") == {
        f"pageviews_hourly_{before}": 1,
        f"pageviews_hourly_{after}": 1,
    }
    assert rows_by_partition(pg, "pageviews_daily") == {f"pageviews_daily_{before}": 1, f"pageviews_daily_{after}": 1}
    total = pg.execute(
        "SELECT sum(views) FROM pageviews_hourly WHERE hour >= %s AND hour < %s", (edge - DAY, edge + DAY)
    ).fetchone()
    assert total == (5,)

    pg.execute("INSERT INTO streams (name) VALUES ('s')")
    midnight = int(dt.datetime.combine(dt.datetime.now(dt.UTC).date(), dt.time(), dt.UTC).timestamp() * 1000)
    pg.execute("INSERT INTO applied_entries VALUES (1, %s, 0), (1, %s, 0)", (midnight - 1, midnight))
    today = dt.datetime.now(dt.UTC).date()
    assert rows_by_partition(pg, "applied_entries") == {
        f"applied_entries_p{today - DAY:%Y%m%d}": 1,
        f"applied_entries_p{today:%Y%m%d}": 1,
    }
    dup = pg.execute(
        "INSERT INTO applied_entries VALUES (1, %s, 0), (1, %s, 0) ON CONFLICT DO NOTHING", (midnight - 1, midnight)
    )
    assert dup.rowcount == 0


def test_rows_waiting_in_default_move_into_a_new_partition(make_settings, schema, pg, r, stream) -> None:
    """Rows for a range without a partition wait in DEFAULT; the next run creates that range's
    partition and moves them in the same transaction: DEFAULT is empty, totals unchanged."""
    settings = make_settings()
    maintain_json(settings)
    old = ago(70).replace(hour=1)  # over two months back: outside the window, inside every retention
    add_pageviews(pg, old, old + dt.timedelta(hours=5), ago(0), views=4)
    pg.execute("INSERT INTO streams (name) VALUES (%s)", (stream,))
    ledger_ms = int(ago(3).timestamp() * 1000)
    pg.execute("INSERT INTO applied_entries VALUES (1, %s, 0), (1, %s, 1)", (ledger_ms, ledger_ms))
    assert rows_by_partition(pg, "pageviews_daily")["pageviews_daily_default"] == 2
    assert rows_by_partition(pg, "applied_entries") == {"applied_entries_default": 2}

    data = maintain_json(settings)
    moved = {c["partition"]: c["rows_from_default"] for c in data["created"]}
    assert moved == {
        f"pageviews_hourly_p{old:%Y%m}": 2,
        f"pageviews_daily_p{old:%Y%m}": 2,
        f"applied_entries_p{ago(3):%Y%m%d}": 2,
    }
    assert data["rows_moved"] == 6 and data["dropped"] == []
    for table in ("pageviews_hourly", "pageviews_daily", "applied_entries"):
        assert f"{table}_default" not in rows_by_partition(pg, table)
    assert pg.execute("SELECT sum(views) FROM pageviews_daily").fetchone() == (12,)
    assert pg.execute("SELECT count(*) FROM applied_entries").fetchone() == (2,)


def test_retention_drops_old_partitions_and_keeps_recent_ones(make_settings, schema, pg) -> None:
    """Defaults: hourly tables keep 90 days, daily tables 400. A partition goes only when its whole
    range is past retention; `--retain daily=60` then drops the old daily partition too."""
    settings = make_settings()
    add_pageviews(pg, ago(130), ago(40), ago(0))
    data = maintain_json(settings)
    assert [d["partition"] for d in data["dropped"]] == [f"pageviews_hourly_p{ago(130):%Y%m}"]
    assert "90-day" in data["dropped"][0]["reason"]
    hours = [h for (h,) in pg.execute("SELECT hour FROM pageviews_hourly ORDER BY hour").fetchall()]
    assert [h.date() for h in hours] == [ago(40).date(), ago(0).date()]
    assert pg.execute("SELECT count(*) FROM pageviews_daily").fetchone() == (3,)

    data = maintain_json(settings, "--retain", "daily=60")
    assert [d["partition"] for d in data["dropped"]] == [f"pageviews_daily_p{ago(130):%Y%m}"]
    days = [d for (d,) in pg.execute("SELECT day FROM pageviews_daily ORDER BY day").fetchall()]
    assert days == [ago(40).date(), ago(0).date()]
    assert f"pageviews_daily_p{ago(130):%Y%m}" not in partitions_of(pg, "pageviews_daily")


def test_ledger_partitions_follow_the_ledger_bound(make_settings, schema, pg, r, stream) -> None:
    """A ledger partition is dropped only when its whole range is older than both the first entry
    still in the stream and now - ledger_retention_s. Redis unreachable: nothing is dropped from
    the ledger (a warning says so), the rest of the run goes on, exit 0."""
    settings = make_settings()
    ms = {age: int(ago(age).timestamp() * 1000) for age in (30, 20, 2)}
    r.xadd(stream, {"k": "v"}, id=f"{ms[20]}-0")
    r.xadd(stream, {"k": "v"}, id=f"{ms[2]}-0")
    pg.execute("INSERT INTO streams (name) VALUES (%s)", (stream,))
    for m in ms.values():
        pg.execute("INSERT INTO applied_entries VALUES (1, %s, 0)", (m,))
    part = {age: f"applied_entries_p{ago(age):%Y%m%d}" for age in ms}

    res = maintain(settings, "--json", redis_url=UNREACHABLE_REDIS)
    assert res.exit_code == 0, res.stdout + res.stderr
    data = json.loads(res.stdout)
    assert data["ledger_keep_from_ms"] is None and data["dropped"] == []
    assert any("ledger partitions not dropped" in w for w in data["warnings"])
    assert set(part.values()) <= partitions_of(pg, "applied_entries")

    data = maintain_json(settings)
    assert data["ledger_keep_from_ms"] == ms[20]  # the first entry is older than now - 7 days
    assert [d["partition"] for d in data["dropped"]] == [part[30]]
    assert sorted(m for (m,) in pg.execute("SELECT entry_ms FROM applied_entries").fetchall()) == [ms[20], ms[2]]

    r.xtrim(
        stream, minid=f"{ms[2]}-0", approximate=False
    )  # the 20-day-old entry leaves the stream: now - 7 days bounds
    data = maintain_json(settings)
    assert [d["partition"] for d in data["dropped"]] == [part[20]]
    assert pg.execute("SELECT entry_ms FROM applied_entries").fetchall() == [(ms[2],)]


def test_dry_run_changes_nothing(make_settings, schema, pg) -> None:
    """`--dry-run` reports the partitions it would create (with the rows it would move) and drop,
    takes no lock, and leaves the catalog and every row where they were."""
    settings = make_settings()
    add_pageviews(pg, ago(130), ago(0))
    before = catalog(pg)
    res = maintain(settings, "--dry-run")
    assert res.exit_code == 0 and "dry run: nothing changed" in res.stdout, res.stdout + res.stderr
    data = maintain_json(settings, "--dry-run")
    assert catalog(pg) == before
    assert data["dry_run"] and data["rows_moved"] == 4 and len(data["created"]) == WINDOW + 2
    assert [d["partition"] for d in data["dropped"]] == [f"pageviews_hourly_p{ago(130):%Y%m}"]
    real = maintain_json(settings)
    assert (real["created"], real["dropped"]) == (data["created"], data["dropped"])


def test_two_concurrent_runs_one_works_the_other_reports_the_lock(make_settings, schema, database_url, ns) -> None:
    """Two `streamproc maintain` processes at once: one takes the advisory lock and does the work
    (here held up by a batch transaction on a rollup table); the other says another run holds the
    lock and exits 0 without touching anything."""
    settings = make_settings()
    with psycopg.connect(database_url, options=f"-c search_path={ns}") as holder:
        holder.execute("LOCK TABLE pageviews_hourly IN ROW EXCLUSIVE MODE")  # a daemon mid-batch
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "streamproc", "maintain", "--json"],
                env=daemon_env(settings),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        wait_for(lambda: any(p.poll() is not None for p in procs), 30, "one run to give way")
        holder.rollback()
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    data = [json.loads(stdout) for stdout, _ in results]
    assert sorted(d["lock_held_elsewhere"] for d in data) == [False, True]
    worker = next(d for d in data if not d["lock_held_elsewhere"])
    loser = next(d for d in data if d["lock_held_elsewhere"])
    assert len(worker["created"]) == WINDOW and worker["errors"] == []
    assert loser["created"] == [] and loser["dropped"] == []


def test_lock_held_elsewhere_exits_0_and_wait_waits(make_settings, schema, pg, database_url, ns) -> None:
    """While another session holds the maintenance lock, a run prints that and exits 0 having done
    nothing; with `--wait` it waits for the lock, then does the work."""
    settings = make_settings()
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", P.lock_key(ns))
        res = maintain(settings)
        assert res.exit_code == 0 and LOCKED in res.stdout, res.stdout + res.stderr
        assert partitions_of(pg, "pageviews_hourly") == {"pageviews_hourly_default"}
        waiting = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "maintain", "--wait", "--json"],
            env=daemon_env(settings),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(2.0)
        assert waiting.poll() is None, "--wait returned while the lock was held"
    stdout, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0
    assert len(json.loads(stdout)["created"]) == WINDOW


def test_new_partitions_get_their_parents_privileges(make_settings, schema, pg, ns) -> None:
    """Default privileges would give a role SELECT on every new table, ledger partitions included;
    a partition made by `maintain` gets exactly its parent's grants instead."""
    role = f"{ns}_reader"
    pg.execute(f'CREATE ROLE "{role}"')
    try:
        pg.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{ns}" GRANT SELECT ON TABLES TO "{role}"')
        pg.execute(f'GRANT SELECT ON pageviews_daily TO "{role}"')
        maintain_json(make_settings())
        today = dt.datetime.now(dt.UTC).date()

        def can_read(table: str) -> bool:
            row = pg.execute("SELECT has_table_privilege(%s, %s, 'SELECT')", (role, table)).fetchone()
            return bool(row and row[0])

        assert can_read(f"pageviews_daily_p{today:%Y%m}")
        assert not can_read(f"pageviews_hourly_p{today:%Y%m}")
        assert not can_read(f"applied_entries_p{today:%Y%m%d}")
    finally:
        pg.execute(f'DROP OWNED BY "{role}"')
        pg.execute(f'DROP ROLE "{role}"')


def test_bad_retain_exits_2(make_settings, schema) -> None:
    """An unknown table or the ledger in `--retain` is bad usage: exit 2, one line naming the option."""
    for bad in ("nope=3", "applied_entries=3"):
        res = maintain(make_settings(), "--retain", bad)
        assert res.exit_code == 2 and "--retain" in res.stderr, res.stdout + res.stderr


# --- the daemon on partitioned tables ----------------------------------------------------------


def produce_with_ids(r: redis.Redis, stream: str, entries: list[SynthEntry], first_ms: int, last_ms: int) -> None:
    """XADD with explicit ids spread evenly from ``first_ms`` to ``last_ms``: ledger rows over several days."""
    step = (last_ms - first_ms) // len(entries)
    pipe = r.pipeline(transaction=False)
    for i, entry in enumerate(entries):
        pipe.xadd(stream, entry.fields, id=f"{first_ms + i * step}-0")  # type: ignore[arg-type]
    pipe.execute()


def test_daemon_totals_exact_across_partitions_and_ledger_dedups_moved_rows(
    make_settings, schema, pg, r, stream, daemons: Daemons
) -> None:
    """Events over 80 days (several monthly partitions, some ranges only in DEFAULT), entry ids over
    six days. A daemon crashes between COMMIT and XACK of its second batch (the ledger, unpartitioned
    since migration 009, holds a range per batch); `maintain` then moves the committed rollup rows out
    of DEFAULT into new partitions; the restarted daemon gets the unacked batch again and the ledger
    recognises every entry of it. Every report total equals the truth."""
    settings = make_settings(batch_size=500, backlog_batch_size=500)  # batches of 500: the arithmetic below
    entries = list(Generator(seed=17, days=80, bad_ratio=0).entries(6000))
    now_ms = int(time.time() * 1000)
    produce_with_ids(r, stream, entries, now_ms - 6 * DAY_MS + 1, now_ms - DAY_MS // 4)
    maintain_json(settings)

    crashed = daemons.start(settings, STREAMPROC_FAILPOINTS="after_commit@2")
    assert crashed.wait(timeout=60) == -signal.SIGKILL
    assert pg.execute("SELECT count(*) FROM applied_ranges").fetchone() == (2,)  # two batches of 500

    data = maintain_json(settings)
    assert data["rows_moved"] > 0 and data["dropped"] == []

    retries = sum(1 for e in entries[1000:] if e.event and e.event.get("_duplicate"))
    survivor = daemons.start(settings, "--drain")
    assert survivor.wait(timeout=120) == 0, daemons.logs()[-3000:]
    drained = log_lines(survivor.logfile, "drained")  # type: ignore[attr-defined]
    assert drained and drained[0]["duplicates"] == 500 + retries, drained

    maintain_json(settings)
    for table in TABLES:
        assert f"{table}_default" not in rows_by_partition(pg, table), table
    assert len(rows_by_partition(pg, "pageviews_daily")) >= 3
    assert_totals(settings, entries)


# --- deployment -------------------------------------------------------------------------------


def test_systemd_maintain_units_verify(tmp_path: Path) -> None:
    """deploy/systemd/streamproc-maintain.{service,timer} load without a warning about them and the
    service's sandbox rates as well as the daemon's."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (./setup.sh does)"
    unit_dir = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
    binary = Path(sys.executable).parent / "streamproc"
    service = (unit_dir / "streamproc-maintain.service").read_text()
    exec_start = "ExecStart=/opt/streamproc/.venv/bin/streamproc "
    assert service.count(exec_start) == 1
    (tmp_path / "streamproc-maintain.service").write_text(service.replace(exec_start, f"ExecStart={binary} "))
    shutil.copy(unit_dir / "streamproc-maintain.timer", tmp_path)
    paths = [str(tmp_path / f"streamproc-maintain.{kind}") for kind in ("service", "timer")]
    proc = subprocess.run([analyze, "verify", *paths], capture_output=True, text=True, timeout=30, check=False)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "streamproc" in line]
    assert proc.returncode == 0 and ours == [], proc.stdout + proc.stderr
    sec = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", paths[0]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    score = float(sec.stdout.rsplit("Overall exposure level for streamproc-maintain.service: ", 1)[1].split()[0])
    assert score <= 1.5, sec.stdout[-2000:]
