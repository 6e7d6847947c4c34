"""Migration 010: bots_daily and event_props_daily partitioned by day, under `maintain`'s retention.

A deployment at 008 (rows written by the daemon's own upserts) is migrated: rows, owner and
grants kept; `report events --name` unchanged; `maintain` makes partitions ahead, moves the old
rows out of DEFAULT and drops what is past retention; `check` sees missing ones. Batches that
run while 010 is applied neither deadlock with it nor lose rows. Real Postgres throughout.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from streamproc.cli.app import app
from streamproc.core import rollups as R
from streamproc.postgres import migrate as migrate_mod
from tests.test_check import check
from tests.test_ops import clean_env
from tests.test_partitions import maintain_json, month_start, partitions_of, rows_by_partition

SITE = "shop.example"
NEW = ("bots_daily", "event_props_daily")
EPOCH = dt.date(1970, 1, 1)
runner = CliRunner()

Props = Counter[tuple[str, dt.date, str, str, str]]  # (site, day, name, key, value) -> events
Bots = Counter[tuple[str, dt.date, str]]  # (site, day, bot) -> events


@pytest.fixture
def at_008(database_url: str, ns: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A schema migrated as a deployment of the release before 010 is (008 and anything else
    numbered below 010); dropped afterwards."""
    every = migrate_mod.load_migrations
    monkeypatch.setattr(migrate_mod, "load_migrations", lambda d=None: [m for m in every(d) if m.version < 10])
    assert 8 in [m.version for m in migrate_mod.migrate(database_url, ns)]
    monkeypatch.undo()
    yield ns
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')


def connect(database_url: str, ns: str, autocommit: bool = True) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url, options=f"-c search_path={ns}", autocommit=autocommit)


def write_batch(conn: psycopg.Connection[Any], bots: Bots, props: Props) -> None:
    """The daemon's own upserts for a batch's events, bots and props shards, in its write order
    (R.ALL: events_hourly, bots_daily, event_props_daily)."""
    events: Counter[tuple[Any, ...]] = Counter()
    for (site, day, name, _k, _v), n in props.items():
        hour = (day - EPOCH).days * 24
        events[(site, hour, "custom", name)] += n
    shards = {R.EVENTS: events, R.BOTS: bots, R.EVENT_PROPS: props}
    for rollup in R.ALL:
        rows = shards.get(rollup)
        if not rows:
            continue
        shard = R.Shard(rollup)
        for key, n in rows.items():
            shard.count(tuple((k - EPOCH).days if isinstance(k, dt.date) else k for k in key), n)
        conn.execute(rollup.upsert_sql().encode(), rollup.parameters(shard.columns()))


def days_ago(n: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=n)


def sample(ages: tuple[int, ...], scale: int = 1) -> tuple[Bots, Props]:
    bots: Bots = Counter()
    props: Props = Counter()
    for i, age in enumerate(ages):
        day = days_ago(age)
        bots[(SITE, day, "Googlebot")] += (i + 1) * scale
        props[(SITE, day, "signup", "plan", "pro")] += (i + 2) * scale
        props[(SITE, day, "signup", "plan", "free")] += (i + 3) * scale
        props[(SITE, day, "video_play", "n", "3")] += scale
    return bots, props


def table_rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())


def acl(conn: psycopg.Connection[Any], table: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """Owner and (grantee, privilege, grantable) of a table, the owner's own rights left out."""
    owner = conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
    rows = conn.execute(
        "SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type,"
        " a.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a"
        " WHERE c.oid = %s::regclass AND a.grantee <> c.relowner ORDER BY 1, 2",
        (table,),
    ).fetchall()
    assert owner is not None
    return owner[0], rows


def properties(database_url: str, ns: str, frm: dt.date, to: dt.date, name: str) -> dict[tuple[str, str], int]:
    """`report events --name NAME --json` over [frm, to]: (key, value) -> events."""
    args = ["report", "events", "--site", SITE, "--name", name, "--from", str(frm), "--to", str(to), "--json"]
    res = runner.invoke(app, [*args, "--database-url", database_url, "--schema", ns], env=clean_env())
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    return {(k, v["value"]): v["events"] for k, values in data["properties"].items() for v in values}


def truth(props: Props, frm: dt.date, to: dt.date, name: str) -> dict[tuple[str, str], int]:
    out: Counter[tuple[str, str]] = Counter()
    for (_s, day, n, key, value), events in props.items():
        if n == name and frm <= day <= to:
            out[(key, value)] += events
    return dict(out)


def test_migration_010_keeps_rows_owner_and_grants_and_maintain_takes_over(
    at_008: str, database_url: str, make_settings: Callable[..., Any]
) -> None:
    """At 008, rows over 500 days in both tables, owned by an owner role, with grants that differ
    from the migrating role's default privileges. 010 makes both partitioned with every row (in
    DEFAULT), the same owner and exactly the same grants (on the DEFAULT partition too);
    `report events --name` reads what was written. `maintain` then creates partitions ahead, moves the
    rows into monthly partitions and drops the month past the 400-day retention; `--retain
    event_props_daily=60` drops more of that table only."""
    ns = at_008
    roles = {k: f"{ns}_{k}" for k in ("owner", "daemon", "reader", "stranger")}
    bots, props = sample((0, 1, 40, 130, 500))
    with connect(database_url, ns) as su:
        try:
            for role in roles.values():
                su.execute(f'CREATE ROLE "{role}"')
            for t in NEW:
                su.execute(f'ALTER TABLE {t} OWNER TO "{roles["owner"]}"')
                su.execute(f'GRANT SELECT, INSERT, UPDATE ON {t} TO "{roles["daemon"]}"')
                su.execute(f'GRANT SELECT ON {t} TO "{roles["reader"]}" WITH GRANT OPTION')
            # Tables the migrating role creates from now on would be readable by a stranger.
            su.execute(f'ALTER DEFAULT PRIVILEGES IN SCHEMA "{ns}" GRANT SELECT ON TABLES TO "{roles["stranger"]}"')
            write_batch(su, bots, props)
            before = {t: (table_rows(su, t), acl(su, t)) for t in NEW}
            today = days_ago(0)
            recent = truth(props, days_ago(1), today, "signup")
            assert len(recent) == 2

            applied = [m.version for m in migrate_mod.migrate(database_url, ns)]
            assert applied[0] == 10, applied
            for t in NEW:
                relkind = su.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (t,)).fetchone()
                assert relkind == ("p",), t
                assert partitions_of(su, t) == {f"{t}_default"}
                assert (table_rows(su, t), acl(su, t)) == before[t], t
                assert acl(su, f"{t}_default") == before[t][1], t
            assert properties(database_url, ns, days_ago(1), today, "signup") == recent

            settings = make_settings()
            data = maintain_json(settings)
            months = {month_start(today, k) for k in range(-1, 4)} | {month_start(days_ago(a)) for a in (40, 130, 500)}
            old = month_start(days_ago(500))
            for t in NEW:
                made = {c["partition"] for c in data["created"] if c["table"] == t}
                assert made == {f"{t}_p{m:%Y%m}" for m in months}, t
                assert [d["partition"] for d in data["dropped"] if d["table"] == t] == [f"{t}_p{old:%Y%m}"]
                assert f"{t}_default" not in rows_by_partition(su, t)
                assert acl(su, f"{t}_p{today:%Y%m}")[1] == before[t][1][1], t  # maintain's partitions: grants
                after = [row for row in before[t][0] if row[1] >= month_start(old, 1)]
                assert table_rows(su, t) == after, t
            assert properties(database_url, ns, days_ago(1), today, "signup") == recent
            assert properties(database_url, ns, days_ago(200), today, "video_play") == truth(
                props, days_ago(200), today, "video_play"
            )

            data = maintain_json(settings, "--retain", "event_props_daily=60")
            dropped = sorted(d["partition"] for d in data["dropped"])
            assert dropped == [f"event_props_daily_p{month_start(days_ago(130)):%Y%m}"], dropped
            assert properties(database_url, ns, days_ago(200), today, "video_play") == truth(
                props, days_ago(40), today, "video_play"
            )
        finally:
            for role in roles.values():
                su.execute(f'DROP OWNED BY "{role}"')
                su.execute(f'DROP ROLE "{role}"')


class Background(threading.Thread):
    """``fn()`` in a thread, its result or error kept for the test to assert on."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:  # handed to the test thread, which asserts on it
            self.error = exc

    def outcome(self) -> Any:
        self.join(timeout=120)
        assert not self.is_alive(), "still running after 120 s"
        assert self.error is None, repr(self.error)
        return self.result


def migrate(database_url: str, ns: str) -> Background:
    """`streamproc migrate` in a thread; its outcome is the versions it applied."""
    return Background(lambda: [m.version for m in migrate_mod.migrate(database_url, ns)])


def lock_waiters(conn: psycopg.Connection[Any], ns: str, pid: int | None = None) -> int:
    """Backends waiting for a lock on one of the schema's tables (or ``pid`` alone)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE NOT l.granted AND n.nspname = %s AND (%s::int IS NULL OR l.pid = %s::int)",
        (ns, pid, pid),
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_batch_holding_bots_daily_while_010_waits_neither_deadlocks_nor_loses_rows(
    at_008: str, database_url: str
) -> None:
    """A batch has written bots_daily and not committed when 010 starts: the migration waits
    without holding event_props_daily, so the batch goes on to write event_props_daily and commits
    (in the other order the two would deadlock and Postgres would fail one); 010 then commits with
    every row of the batch."""
    ns = at_008
    bots, props = sample((0, 3))
    late_bots, late_props = sample((0, 2), scale=10)
    with connect(database_url, ns) as watcher, connect(database_url, ns, autocommit=False) as batch:
        write_batch(watcher, bots, props)
        no_props: Props = Counter()
        write_batch(batch, late_bots, no_props)  # bots_daily held by the batch
        migration = migrate(database_url, ns)
        try:
            wait_until(lambda: lock_waiters(watcher, ns) == 1, "010 to wait for the batch")
            write_batch(batch, Counter(), late_props)  # must not wait for the migration
            batch.commit()
        finally:
            batch.rollback()
        assert migration.outcome()[0] == 10  # first, whatever migration follows it
        assert sum_of(watcher, "bots_daily") == sum((bots + late_bots).values())
        assert sum_of(watcher, "event_props_daily") == sum((props + late_props).values())
        assert set(rows_by_partition(watcher, "event_props_daily")) == {"event_props_daily_default"}


def test_a_batch_waiting_behind_010_writes_into_the_partitioned_table(at_008: str, database_url: str) -> None:
    """010 holds both tables (held up just before it records itself); a batch's upserts wait for
    it, then land in the new partitioned table: nothing goes to the old one, nothing is lost."""
    ns = at_008
    bots, props = sample((0, 5))
    late_bots, late_props = sample((0, 1), scale=7)
    with connect(database_url, ns) as watcher, connect(database_url, ns, autocommit=False) as gate:
        write_batch(watcher, bots, props)
        gate.execute("LOCK TABLE schema_migrations IN SHARE MODE")  # reads go on; 010's INSERT waits
        migration = migrate(database_url, ns)
        wait_until(lambda: lock_waiters(watcher, ns) == 1, "010 to hold the tables, waiting to record itself")
        with connect(database_url, ns, autocommit=False) as batch:
            pid = batch.info.backend_pid
            writer = Background(lambda: (write_batch(batch, late_bots, late_props), batch.commit()))
            wait_until(lambda: lock_waiters(watcher, ns, pid) == 1, "the batch to wait for 010")
            gate.rollback()
            assert migration.outcome()[0] == 10  # first, whatever migration follows it
            writer.outcome()
        assert sum_of(watcher, "bots_daily") == sum((bots + late_bots).values())
        assert sum_of(watcher, "event_props_daily") == sum((props + late_props).values())
        for t in NEW:
            assert set(rows_by_partition(watcher, t)) == {f"{t}_default"}
        assert watcher.execute("SELECT to_regclass('event_props_daily_unpartitioned')").fetchone() == (None,)


def test_check_reports_props_and_bots_partitions_missing_ahead(
    schema: str, database_url: str, redis_url: str, make_settings: Callable[..., Any]
) -> None:
    """`streamproc check` warns when bots_daily's or event_props_daily's partitions ahead are
    missing, like any other table's, and is satisfied once `maintain` has made them."""
    settings = make_settings()
    maintain_json(settings)

    def partitions_status() -> tuple[str, str]:
        _, statuses, text = check(redis_url=redis_url, database_url=database_url, schema=schema, streams="ev")
        return statuses["partitions"], text

    assert partitions_status()[0] == "ok"
    ahead = month_start(days_ago(0), 2)
    with connect(database_url, schema) as conn:
        for t in NEW:
            conn.execute(f"DROP TABLE {t}_p{ahead:%Y%m}")
    status, text = partitions_status()
    assert status == "warn" and "2 partition(s) missing ahead" in text, text
    made = maintain_json(settings)["created"]
    assert sorted(c["partition"] for c in made) == [f"{t}_p{ahead:%Y%m}" for t in NEW]
    assert partitions_status()[0] == "ok"


def sum_of(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT coalesce(sum(events), 0)::bigint FROM {table}").fetchone()
    return int(row[0]) if row else 0


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    from tests.conftest import wait_for

    wait_for(predicate, 60, what)
