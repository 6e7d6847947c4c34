"""`streamproc check`: each check against real servers, as the daemon's least-privilege users.

Redis: a throwaway server loading deploy/redis/streamproc.acl (the ``acl_redis`` fixture), plus
one whose users a test narrows itself. Postgres: the session cluster, a schema per test.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from streamproc.dev.localservers import RedisServer, start_postgres, start_redis
from streamproc.postgres.partitions import maintain
from tests.test_security import AclRedis, acl_redis, cli, run_roles_sql, with_user  # noqa: F401  # the ACL server fixture

SECRET_ENV = {"STREAMPROC_VISITOR_SECRET": "s" * 32}


def check(*args: str, redis_url: str, database_url: str, schema: str, streams: str) -> tuple[int, dict[str, str], str]:
    """Run `streamproc check`; returns the exit code, name -> status, and the text output."""
    res = cli(
        "check",
        "--redis-url",
        redis_url,
        "--database-url",
        database_url,
        "--schema",
        schema,
        "--streams",
        streams,
        "--group",
        "g",
        *args,
        env=SECRET_ENV,
    )
    assert "Traceback" not in res.stderr, res.stderr
    statuses = {}
    for line in res.stdout.splitlines():
        status, _, rest = line.partition("  ")
        statuses[rest.strip().split("  ")[0]] = status.strip()
    return res.returncode, statuses, res.stdout


@pytest.fixture
def plain_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (its users and config may be changed)."""
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


def provision(acl: AclRedis, database_url: str, schema: str, streams: str) -> None:
    setup = cli(
        "setup", "--redis-url", acl.url("streamproc-admin"), "--database-url", database_url, "--schema", schema,
        "--streams", streams, "--group", "g",
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr


def test_all_ok_under_the_acl_file(acl_redis: AclRedis, database_url: str, schema: str, ns: str) -> None:  # noqa: F811
    """Provisioned with `setup`, checked as the daemon's `streamproc` Redis user: every check ok but
    maxmemory-policy and persistence, which that user may not read, and the suite's Postgres, which
    runs without durable commits (warnings, each named); exit 0. The JSON output carries the
    effective configuration with the Redis password masked."""
    streams = "events:{0..1}"
    provision(acl_redis, database_url, schema, streams)
    url = acl_redis.url("streamproc")
    code, statuses, text = check(redis_url=url, database_url=database_url, schema=schema, streams=streams)
    assert code == 0, text
    assert statuses.pop("maxmemory-policy") == "warn"
    assert statuses.pop("redis persistence") == "warn" and "may run neither CONFIG GET nor INFO" in text
    for name in ("fsync", "synchronous_commit", "full_page_writes"):  # tests/testservers.py turns them off
        assert statuses.pop(name) == "warn" and f"{name} = off" in text
    assert statuses == {
        "config": "ok",
        "visitor secret": "ok",
        "redis": "ok",
        "redis permissions": "ok",
        "group events:{0}": "ok",
        "group events:{1}": "ok",
        "postgres": "ok",
        "schema": "ok",
        "grants": "ok",
        "partitions": "ok",
    }, text
    res = cli(
        "check", "--json", "--redis-url", url, "--database-url", database_url, "--schema", schema,
        "--streams", streams, "--group", "g", env=SECRET_ENV,
    )  # fmt: skip
    doc = json.loads(res.stdout)
    assert doc["status"] == "ok" and doc["config"]["streams"] == ["events:{0}", "events:{1}"]
    assert acl_redis.passwords["streamproc"] not in res.stdout and doc["config"]["visitor_secret"] == "***"
    assert {c["name"] for c in doc["checks"]} >= {"redis permissions", "grants"}


def test_each_missing_piece_fails_its_own_check(
    acl_redis: AclRedis,  # noqa: F811
    plain_redis: RedisServer,
    database_url: str,
    ns: str,
) -> None:
    """An unprovisioned stream, an unmigrated schema, a user missing one command on the
    dead-letter key, an evicting Redis: each fails (or warns) on its own line naming what to do; exit 1."""
    code, statuses, text = check(
        redis_url=acl_redis.url("streamproc"), database_url=database_url, schema=ns, streams="events:{7}"
    )
    assert code == 1
    assert statuses["group events:{7}"] == "fail" and "streamproc setup" in text
    assert statuses["schema"] == "fail" and "streamproc migrate" in text
    assert "grants" not in statuses  # nothing to check grants on

    admin = redis.Redis(port=plain_redis.port)
    admin.xgroup_create("ev", "g", id="0", mkstream=True)
    admin.acl_setuser(
        "narrow", enabled=True, passwords=["+pw"], keys=["~ev", "~ev:*"],
        commands=["+@all", "-hset", "-config", "-info"],
    )  # fmt: skip
    admin.config_set("maxmemory-policy", "allkeys-lru")
    narrow = f"redis://narrow:pw@127.0.0.1:{plain_redis.port}/0"
    code, statuses, text = check(redis_url=narrow, database_url=database_url, schema=ns, streams="ev")
    assert code == 1
    assert statuses["redis permissions"] == "fail" and "HSET ev:dlq:ids" in text, text
    assert statuses["group ev"] == "ok" and statuses["maxmemory-policy"] == "warn"  # -config -info: unknown
    plain = f"redis://127.0.0.1:{plain_redis.port}/0"
    code, statuses, text = check(redis_url=plain, database_url=database_url, schema=ns, streams="ev")
    assert statuses["redis permissions"] == "ok" and statuses["maxmemory-policy"] == "fail", text
    assert "allkeys-lru" in text
    admin.config_set("maxmemory-policy", "noeviction")
    code, statuses, text = check(redis_url=plain, database_url=database_url, schema=ns, streams="ev")
    assert statuses["maxmemory-policy"] == "ok"
    admin.close()


def test_grants_and_partitions(acl_redis: AclRedis, database_url: str, schema: str) -> None:  # noqa: F811
    """A role that may connect but holds no table privilege fails `grants` with the GRANT to run;
    partitions missing ahead are a warning until `maintain` creates them."""
    provision(acl_redis, database_url, schema, "events")
    role, password = f"{schema}_nogrants", secrets.token_hex(8)
    with psycopg.connect(database_url, autocommit=True) as su:
        su.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
        su.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        # Drop the partitions ahead that `setup` made: `check` must notice.
        parts = su.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname ~ '_p\\d{8}$'"
            " AND to_date(right(c.relname, 8), 'YYYYMMDD') > current_date + 1",
            (schema,),
        ).fetchall()
        for (part,) in parts:
            su.execute(f'DROP TABLE "{schema}"."{part}"')
    try:
        url = with_user(database_url, role, password)
        code, statuses, text = check(
            redis_url=acl_redis.url("streamproc"), database_url=url, schema=schema, streams="events"
        )
        assert code == 1, text
        assert "grants" in statuses, text
        assert statuses["grants"] == "fail" and "GRANT SELECT, INSERT, UPDATE ON" in text, text
        assert statuses["schema"] == "warn"  # it may not even read schema_migrations
        assert statuses["partitions"] == "warn" and "cannot tell as role" in text, text
        assert parts, "setup created no partition more than a day ahead: the test proves nothing"
        code, statuses, text = check(
            redis_url=acl_redis.url("streamproc"), database_url=database_url, schema=schema, streams="events"
        )
        assert statuses["partitions"] == "warn" and "missing ahead: run `streamproc maintain`" in text, text
        maintain(database_url, schema, drop=False)
        code, statuses, text = check(
            redis_url=acl_redis.url("streamproc"), database_url=database_url, schema=schema, streams="events"
        )
        assert statuses["partitions"] == "ok" and statuses["grants"] == "ok", text
    finally:
        with psycopg.connect(database_url, autocommit=True) as su:
            su.execute(f'DROP OWNED BY "{role}"')
            su.execute(f'DROP ROLE "{role}"')


def test_invalid_configuration_exits_2() -> None:
    """Nothing is checked when the configuration itself is invalid: one line, exit 2."""
    res = cli("check", "--batch-size", "0", env=SECRET_ENV)
    assert res.returncode == 2 and "invalid batch_size" in res.stderr and res.stdout == ""


def test_all_ok_as_the_daemon_role_of_roles_sql(acl_redis: AclRedis, database_url: str, ns: str) -> None:  # noqa: F811
    """deploy/postgres/roles.sql's daemon role passes every Postgres check, partitions included."""
    roles = {"owner": f"{ns}_owner", "daemon": f"{ns}_daemon", "reader": f"{ns}_reader"}
    passwords = {role: secrets.token_hex(12) for role in roles.values()}
    try:
        run_roles_sql(database_url, schema=ns, **roles)
        with psycopg.connect(database_url, autocommit=True) as su:
            for role, password in passwords.items():
                su.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        owner = with_user(database_url, roles["owner"], passwords[roles["owner"]])
        provision(acl_redis, owner, ns, "events")
        run_roles_sql(database_url, schema=ns, **roles)
        daemon = with_user(database_url, roles["daemon"], passwords[roles["daemon"]])
        code, statuses, text = check(
            redis_url=acl_redis.url("streamproc"), database_url=daemon, schema=ns, streams="events"
        )
        assert code == 0, text
        assert [statuses[k] for k in ("postgres", "schema", "grants", "partitions")] == ["ok"] * 4, text
    finally:
        with psycopg.connect(database_url, autocommit=True) as su:
            su.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')
            for role in roles.values():
                su.execute(f'DROP OWNED BY "{role}"')
                su.execute(f'DROP ROLE "{role}"')


def test_non_durable_servers_are_warned_about_each_setting_named(
    plain_redis: RedisServer, database_url: str, ns: str
) -> None:
    """Acking after COMMIT relies on durable commits and a Redis that keeps the stream: fsync,
    synchronous_commit, full_page_writes off (the suite's Postgres) and a Redis with appendonly no
    and no save points each give one warn line naming the setting, in text and JSON; a
    durable Postgres and a Redis with AOF or save points give ok lines instead."""
    plain = f"redis://127.0.0.1:{plain_redis.port}/0"
    admin = redis.Redis(port=plain_redis.port)
    admin.xgroup_create("ev", "g", id="0", mkstream=True)
    _, statuses, text = check(redis_url=plain, database_url=database_url, schema=ns, streams="ev")
    assert statuses["redis persistence"] == "warn" and "appendonly no, no save points" in text, text
    for name in ("fsync", "synchronous_commit", "full_page_writes"):
        assert statuses[name] == "warn" and f"set {name} = on" in text, text
    assert "postgres durability" not in statuses
    res = cli(
        "check", "--json", "--redis-url", plain, "--database-url", database_url, "--schema", ns,
        "--streams", "ev", "--group", "g", env=SECRET_ENV,
    )  # fmt: skip
    warned = {c["name"] for c in json.loads(res.stdout)["checks"] if c["status"] == "warn"}
    assert warned >= {"redis persistence", "fsync", "synchronous_commit", "full_page_writes"}

    admin.config_set("appendonly", "yes")
    durable = start_postgres(durable=True)  # its own temp dir, readable by the postgres user
    try:
        _, statuses, text = check(redis_url=plain, database_url=durable.url, schema=ns, streams="ev")
    finally:
        durable.destroy()
    assert statuses["redis persistence"] == "ok" and "appendonly yes" in text, text
    assert statuses["postgres durability"] == "ok", text
    assert not {"fsync", "synchronous_commit", "full_page_writes"} & set(statuses)
    admin.config_set("appendonly", "no")
    admin.config_set("save", "3600 1")
    _, statuses, text = check(redis_url=plain, database_url=database_url, schema=ns, streams="ev")
    assert statuses["redis persistence"] == "ok" and "save 3600 1" in text, text
    admin.close()
