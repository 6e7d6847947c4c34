"""The Postgres fault classifier, fed with errors a real server raises.

Each case provokes the condition on the test server and hands the psycopg error
to :func:`streamproc.postgres.faults.classify` (and :func:`translate`, which the
sink, migrate and maintain use at the edge).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from streamproc.dev.localservers import free_port
from streamproc.errors import EntryRejected, SchemaNotReady, SinkMisconfigured, SinkUnavailable, TransactionAborted
from streamproc.postgres.faults import Fault, classify, translate
from streamproc.postgres.sink import PostgresSink
from tests.conftest import wait_for
from tests.pgroles import url_as


def error_of(action: Callable[[], object]) -> psycopg.Error:
    try:
        action()
    except psycopg.Error as exc:
        return exc
    raise AssertionError("the server accepted it")


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture
def table(conn: psycopg.Connection[Any], ns: str) -> Iterator[str]:
    conn.execute(f"CREATE TABLE {ns} (k int PRIMARY KEY, n bigint NOT NULL, v numeric)")
    yield ns
    conn.execute(f"DROP TABLE IF EXISTS {ns}")


def test_data_postgres_cannot_store_is_the_entrys_fault(conn, table: str, ns: str) -> None:
    """A numeric overflow ("0E-1000000"), a bigint pushed past its range, a row no partition
    takes, a NUL in text: ENTRY, translated to EntryRejected carrying Postgres's message."""
    conn.execute(f"INSERT INTO {table} VALUES (1, 9223372036854775807, 0)")
    conn.execute(f"CREATE TABLE {ns}_p (day date NOT NULL) PARTITION BY RANGE (day)")
    conn.execute(f"CREATE TABLE {ns}_p1 PARTITION OF {ns}_p FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
    try:
        cases = {
            "value overflows numeric format": lambda: conn.execute("SELECT '0E-1000000'::numeric + 1"),
            "bigint out of range": lambda: conn.execute(f"UPDATE {table} SET n = n + 1 WHERE k = 1"),
            "no partition of relation": lambda: conn.execute(f"INSERT INTO {ns}_p VALUES ('2025-06-01')"),
            "0x00": lambda: conn.execute("SELECT %s::text", ("a\x00b",)),
        }
        for words, action in cases.items():
            exc = error_of(action)
            assert classify(exc) is Fault.ENTRY, (words, exc.sqlstate, exc)
            error = translate(exc, "commit")
            assert isinstance(error, EntryRejected) and words in str(error), error
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {ns}_p")


def test_read_only_lock_and_statement_timeouts_are_transient(conn, database_url: str, table: str) -> None:
    """A read-only transaction (what a hot standby or a primary being demoted answers), a lock
    timeout and a statement timeout: TRANSIENT, retried in process."""
    with psycopg.connect(database_url) as ro:
        ro.execute("SET TRANSACTION READ ONLY")
        exc = error_of(lambda: ro.execute(f"INSERT INTO {table} VALUES (2, 0, 0)"))
    assert exc.sqlstate == "25006" and "read-only transaction" in str(exc)
    assert classify(exc) is Fault.TRANSIENT and isinstance(translate(exc, "commit"), SinkUnavailable)

    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as waiter:
        holder.execute(f"LOCK TABLE {table}")
        waiter.execute("SET lock_timeout = 50")
        exc = error_of(lambda: waiter.execute(f"INSERT INTO {table} VALUES (3, 0, 0)"))
    assert classify(exc) is Fault.TRANSIENT and isinstance(translate(exc, "commit"), TransactionAborted)

    with psycopg.connect(database_url) as slow:
        slow.execute("SET statement_timeout = 50")
        exc = error_of(lambda: slow.execute("SELECT pg_sleep(5)"))
    assert classify(exc) is Fault.TRANSIENT and isinstance(translate(exc, "commit"), TransactionAborted)


def test_too_many_clients_unreachable_and_idle_timeout_are_transient(conn, database_url: str, ns: str) -> None:
    """Too many connections (a role's limit here, max_connections the same), a server that does
    not answer, a session the server ended for idling in a transaction: TRANSIENT."""
    role = f"{ns}_full"
    conn.execute(f"CREATE ROLE \"{role}\" LOGIN CONNECTION LIMIT 0 PASSWORD 'pw-0'")
    try:
        exc = error_of(lambda: psycopg.connect(url_as(database_url, role, "pw-0")))
        assert "too many connections" in str(exc) and classify(exc) is Fault.TRANSIENT
    finally:
        conn.execute(f'DROP ROLE "{role}"')
    exc = error_of(lambda: psycopg.connect(f"postgresql://u@127.0.0.1:{free_port()}/x", connect_timeout=2))
    assert classify(exc) is Fault.TRANSIENT

    with psycopg.connect(database_url) as idle:
        idle.execute("SET idle_in_transaction_session_timeout = 100")
        idle.execute("SELECT 1")  # opens the transaction, then idles in it
        pid = idle.info.backend_pid
        wait_for(
            lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,),
            30,
            "the server to end the idle session",
        )
        exc = error_of(lambda: idle.execute("SELECT 1"))
    assert classify(exc) is Fault.TRANSIENT and isinstance(translate(exc, "commit"), SinkUnavailable)


def test_missing_privilege_is_permanent_and_says_what_to_grant(conn, database_url: str, table: str, ns: str) -> None:
    """INSERT revoked on a table: PERMANENT (exit 2), one line naming the role, the table and the
    GRANT to run; never the entry's fault."""
    role = f"{ns}_daemon"
    conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw-0'")
    conn.execute(f'GRANT SELECT ON {table} TO "{role}"')
    try:
        with psycopg.connect(url_as(database_url, role, "pw-0")) as limited:
            exc = error_of(lambda: limited.execute(f"INSERT INTO {table} VALUES (4, 0, 0)"))
        assert classify(exc) is Fault.PERMANENT
        error = translate(exc, "commit", "public", role)
        assert isinstance(error, SinkMisconfigured) and error.exit_code == 2
        assert f"GRANT SELECT, INSERT, UPDATE ON public.{table} TO {role}" in str(error), error
        assert "\n" not in str(error)
    finally:
        conn.execute(f'REVOKE ALL ON {table} FROM "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


def test_wrong_database_or_role_is_permanent_and_unmigrated_schema_says_migrate(conn, database_url: str) -> None:
    """A database or role that does not exist: PERMANENT. A table the code needs missing:
    SCHEMA, which says to run `streamproc migrate` (exit 2)."""
    for url in (make_conninfo(database_url, dbname="no_such_db"), url_as(database_url, "nobody", "pw-0")):
        exc = error_of(lambda url=url: psycopg.connect(url))
        assert classify(exc) is Fault.PERMANENT, exc
        assert isinstance(translate(exc, "connection"), SinkMisconfigured)
    exc = error_of(lambda: conn.execute("SELECT * FROM no_such_table_here"))
    assert classify(exc) is Fault.SCHEMA
    error = translate(exc, "commit", "s1")
    assert isinstance(error, SchemaNotReady) and "streamproc migrate" in str(error) and error.exit_code == 2


# Every connection option whose value libpq checks itself, with a value it refuses.
INVALID_OPTIONS = [
    "sslmode=banana",
    "target_session_attrs=banana",
    "gssencmode=banana",
    "channel_binding=banana",
    "load_balance_hosts=banana",
    "sslnegotiation=banana",
    "sslcertmode=banana",
    "require_auth=banana",
    "ssl_min_protocol_version=banana",
    "ssl_max_protocol_version=TLSv1.2&ssl_min_protocol_version=TLSv1.3",
    "min_protocol_version=9",
    "hostaddr=banana",
    "port=banana",
]


@pytest.mark.parametrize("option", INVALID_OPTIONS)
def test_every_option_libpq_refuses_is_configuration(database_url: str, option: str) -> None:
    """libpq refuses an invalid option value before any network I/O (`invalid <option> value`,
    `invalid integer value`, `invalid SSL protocol version range`, a hostaddr that is no address):
    configuration, exit 2, like sslmode already was; never retried forever as "cannot connect"."""
    from streamproc.postgres.session import connect

    sep = "&" if "?" in database_url else "?"
    with pytest.raises(SinkMisconfigured, match="Postgres refused the connection"):
        connect(f"{database_url}{sep}{option}", "public")


def test_a_postgres_url_at_a_redis_port_is_configuration(redis_url: str) -> None:
    """libpq's SSLRequest has no newline: Redis waits for the rest of the command and never
    answers, and the connection times out. The port answers a Redis PING, so this is certainly
    no Postgres server: configuration naming STREAMPROC_DATABASE_URL, not an endless retry."""
    from streamproc.postgres.session import connect

    host, _, port = redis_url.partition("://")[2].partition("/")[0].rpartition(":")
    with pytest.raises(SinkMisconfigured, match=r"points at a Redis server .* STREAMPROC_DATABASE_URL"):
        connect(f"postgresql://u@{host}:{port}/db", "public")


def test_a_silent_port_stays_transient() -> None:
    """A port that accepts and answers nothing (a server hanging, a half-open proxy) may come
    back: transient, retried."""
    import socket

    from streamproc.postgres.session import connect

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with pytest.raises(SinkUnavailable, match="timeout expired"):
            connect(f"postgresql://u@127.0.0.1:{port}/db", "public")


def test_a_connection_left_mid_command_is_dropped_and_the_retry_reconnects(database_url: str, schema: str) -> None:
    """A COMMIT cut by the network can leave libpq mid-command, with psycopg not marking the
    connection broken: every later statement then fails with "another command is already in
    progress" and the daemon retried on that connection for ever (seen in the commit-lost chaos
    test). The state is made here the way libpq reaches it, a query sent and never read: the
    first call is a transient failure, and the next one runs on a new connection."""
    sink = PostgresSink(database_url, schema)
    try:
        assert sink.known_streams(["s"]) == set()
        first = sink.conn
        first.pgconn.send_query(b"SELECT pg_sleep(0)")  # libpq now waits for a reply nobody reads
        with pytest.raises(SinkUnavailable, match="another command is already in progress"):
            sink.known_streams(["s"])
        assert first.closed, "the connection left mid-command was dropped"
        assert sink.known_streams(["s"]) == set()
        assert sink.conn is not first
    finally:
        sink.close()
