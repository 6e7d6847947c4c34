"""Least privilege, TLS and secrets hygiene, against real servers on loopback.

- Redis: a throwaway ``redis-server`` loading ``deploy/redis/streamproc.acl`` (test passwords
  substituted in a copy); provisioning as ``streamproc-admin``, producing as
  ``streamproc-producer``, the daemon as ``streamproc``, ``status`` as ``streamproc-monitor``.
- Postgres: ``deploy/postgres/roles.sql`` run with psql on the session cluster (role names unique
  per run: roles are cluster-wide), migrations as the owner role, the daemon as the daemon role.
- TLS: a throwaway CA, a TLS-only ``redis-server`` and a Postgres accepting only ``hostssl``
  connections (SCRAM passwords), verified clients (``ssl_cert_reqs=required``,
  ``sslmode=verify-full``).
- Secrets: passwords and the visitor secret never show up in logs, ``--help``, errors or
  ``status`` output.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import psycopg.errors as pge
import pytest
import redis
import redis.exceptions as rx

from streamproc.config import Settings
from streamproc.dev.localservers import PostgresServer, RedisServer, free_port, start_postgres, start_redis
from streamproc.dev.synth import Generator, SynthEntry, produce
from streamproc.errors import SourceMisconfigured
from streamproc.redis.classify import Kind, classify, translate
from tests.conftest import Daemons, daemon_env, exit_code
from tests.test_crash import assert_totals, log_lines
from tests.test_ledger import ledger_covers

ROOT = Path(__file__).resolve().parent.parent
ACL_FILE = ROOT / "deploy" / "redis" / "streamproc.acl"
ROLES_SQL = ROOT / "deploy" / "postgres" / "roles.sql"
ACL_USERS = ("streamproc", "streamproc-admin", "streamproc-monitor", "streamproc-producer")


# --- helpers ---------------------------------------------------------------------------------


def cli(*args: str, env: Mapping[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m streamproc ARGS`` in a child process, with no STREAMPROC_* from our environment."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    full["COLUMNS"] = "200"  # no line wrapping in human-readable output
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamproc", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def with_user(url: str, user: str, password: str | None = None) -> str:
    """``url`` with its user (and password) replaced."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def synth(n: int, seed: int, bad_ratio: float = 0.02) -> list[SynthEntry]:
    return list(Generator(seed=seed, days=2, bad_ratio=bad_ratio).entries(n))


def dlq_total(client: redis.Redis, streams: list[str]) -> int:
    return sum(int(client.xlen(f"{s}:dlq")) for s in streams)


def one_error_line(stderr: str) -> str:
    """The CLI's error output: exactly one line, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("streamproc: error:"), stderr
    return lines[0]


# --- Redis with the ACL file -----------------------------------------------------------------


@dataclass
class AclRedis:
    server: RedisServer
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.server.port}/0"

    def client(self, user: str) -> redis.Redis:
        return redis.Redis.from_url(self.url(user))


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """redis-server started with ``--aclfile`` = a copy of deploy/redis/streamproc.acl whose
    password-hash placeholders are replaced by the SHA-256 of fresh test passwords."""
    directory = tmp_path_factory.mktemp("acl")
    passwords = {user: f"{user}-pw-{secrets.token_hex(12)}" for user in ACL_USERS}
    text = ACL_FILE.read_text()
    for user, password in passwords.items():
        placeholder = "#SHA256_OF_" + user.upper().replace("-", "_") + "_PASSWORD"
        assert placeholder in text, placeholder
        text = text.replace(placeholder, "#" + hashlib.sha256(password.encode()).hexdigest())
    acl = directory / "streamproc.acl"
    acl.write_text(text)
    server = start_redis(directory / "redis", extra=["--aclfile", str(acl)])
    try:
        yield AclRedis(server, passwords)
    finally:
        server.stop()


def test_daemon_runs_under_the_redis_acl(
    acl_redis: AclRedis, make_settings: Callable[..., Settings], schema: str, database_url: str, daemons: Daemons
) -> None:
    """`streamproc setup` as streamproc-admin creates the groups; a producer that may only XADD
    writes a few thousand events (malformed ones included) to two streams; the daemon, as the
    least-privilege `streamproc` user, drains them: exit 0, exact totals, no NOPERM anywhere
    (group check, reads, reclaims, acks, ledger prune, metrics refresher), and every malformed
    entry in its DLQ - the dead-letter transaction's XADD on `<stream>:dlq` is allowed by the
    ACL selector while the user may not XADD anywhere else."""
    streams = ["events:{0}", "events:{1}"]
    setup = cli(
        "setup",
        "--json",
        "--redis-url",
        acl_redis.url("streamproc-admin"),
        "--database-url",
        database_url,
        "--schema",
        schema,
        "--streams",
        "events:{0..1}",
        "--group",
        "g",
    )
    assert setup.returncode == 0, setup.stderr
    assert json.loads(setup.stdout)["groups_created"] == streams

    entries = synth(3000, seed=21)
    with acl_redis.client("streamproc-producer") as producer:
        produce(producer, streams[0], entries[0::2])
        produce(producer, streams[1], entries[1::2])

    with acl_redis.client("streamproc") as dead:  # a consumer that died holding 100 entries
        dead.xreadgroup("g", "dead", {streams[0]: ">"}, count=100)

    settings = make_settings(redis_url=acl_redis.url("streamproc"), streams="events:{0..1}")
    proc = daemons.start(settings, "--drain", STREAMPROC_LOG_LEVEL="debug")
    assert exit_code(proc, 90) == 0, daemons.logs()[-3000:]
    assert "reclaimed" in daemons.logs(), "the dead consumer's entries were taken over (XAUTOCLAIM)"
    logs = daemons.logs()
    assert "NOPERM" not in logs and "no permissions" not in logs, logs[-3000:]
    assert "group state refresh failed" not in logs, logs[-3000:]  # metrics: XINFO, XLEN, XPENDING
    assert_totals(settings, entries)

    malformed = sum(1 for e in entries if e.event is None)
    assert malformed > 20
    with acl_redis.client("streamproc-admin") as admin:
        assert dlq_total(admin, streams) == malformed
        for stream in streams:
            assert admin.xpending(stream, "g")["pending"] == 0
            for _id, fields in admin.xrange(f"{stream}:dlq", count=5):
                assert fields[b"_dlq_source"] == stream.encode() and fields[b"_dlq_reason"]


def test_daemon_user_is_refused_destructive_commands(acl_redis: AclRedis) -> None:
    """As `streamproc`: FLUSHALL, DEL, CONFIG GET, KEYS, XGROUP DESTROY, XGROUP CREATE, XADD to a
    source stream and any command on a key outside the patterns are refused with NOPERM, and
    nothing changed."""
    stream = "events:{refused}"
    with acl_redis.client("streamproc-admin") as admin:
        admin.xgroup_create(stream, "g", id="0", mkstream=True)
        admin.xadd(stream, {"type": "page_view"})
        with acl_redis.client("streamproc") as daemon:
            attempts: dict[str, Callable[[], Any]] = {
                "FLUSHALL": daemon.flushall,
                "DEL": lambda: daemon.delete(stream),
                "CONFIG GET": lambda: daemon.config_get("requirepass"),
                "KEYS": lambda: daemon.keys("*"),
                "XGROUP DESTROY": lambda: daemon.xgroup_destroy(stream, "g"),
                "XGROUP CREATE": lambda: daemon.xgroup_create(stream, "g2", id="0"),
                "XTRIM": lambda: daemon.xtrim(stream, maxlen=0),
                "XADD to a source stream": lambda: daemon.xadd(stream, {"forged": "1"}),
                "XADD to a foreign dlq": lambda: daemon.xadd("other:dlq", {"forged": "1"}),
                "XLEN outside the key patterns": lambda: daemon.xlen("sessions:secret"),
            }
            for what, attempt in attempts.items():
                with pytest.raises(rx.NoPermissionError, match="no permissions"):
                    attempt()
                    pytest.fail(f"{what} was allowed")
            assert daemon.ping()
        assert admin.xlen(stream) == 1
        assert [g["name"] for g in admin.xinfo_groups(stream)] == [b"g"]


def test_operator_commands_under_admin_and_monitor_users(acl_redis: AclRedis) -> None:
    """The ops CLI works within its users' grants: as streamproc-monitor (read-only) `status`,
    `pending`, `top` and `dlq list`; as streamproc-admin `claim`, `ack`, `consumers drain`
    (Lua: XPENDING + XGROUP DELCONSUMER), `trim` and `dlq replay` (Lua: XRANGE, XADD to the
    source stream and the replay log, XDEL). The monitor trying to replay gets one NOPERM line, exit 2."""
    stream = "events:{ops}"
    admin = {"STREAMPROC_REDIS_URL": acl_redis.url("streamproc-admin"), "STREAMPROC_STREAMS": stream}
    monitor = {**admin, "STREAMPROC_REDIS_URL": acl_redis.url("streamproc-monitor")}
    for env in (admin, monitor):
        env["STREAMPROC_GROUP"] = "g"

    def ok(env: Mapping[str, str], *args: str) -> Any:
        done = cli(*args, "--json", env=env)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return json.loads(done.stdout)

    assert ok(admin, "setup", "--skip-migrate")["groups_created"] == [stream]
    with acl_redis.client("streamproc-producer") as producer:
        ids = [
            producer.xadd(stream, {"type": "custom", "site": "s", "ts": "1", "name": str(i)}).decode() for i in range(4)
        ]
    with acl_redis.client("streamproc") as daemon:
        daemon.xreadgroup("g", "c-old", {stream: ">"}, count=3)
        daemon.xreadgroup("g", "c-live", {stream: ">"}, count=1)
    with acl_redis.client("streamproc-admin") as client:
        dead = client.xadd(
            f"{stream}:dlq",
            {"_dlq_source": stream, "_dlq_id": "1-0", "_dlq_reason": "test", "type": "custom", "site": "s"},
        ).decode()

    assert ok(monitor, "status")["streams"][0]["pending"] == 4
    assert ok(monitor, "pending")
    assert ok(monitor, "top", "--iterations", "1")
    assert ok(monitor, "dlq", "list")
    refused = cli("dlq", "replay", "--force", "--all", env=monitor)
    assert refused.returncode == 2 and "no permissions" in one_error_line(refused.stderr), refused.stderr

    ok(admin, "claim", ids[1], "--to", "c-live", "--yes")
    ok(admin, "ack", ids[0], "--force", "--yes")
    assert ok(admin, "consumers", "drain", "c-old", "--to", "c-live")["streams"][0]["deleted"] is True
    assert ok(admin, "trim")["removed"] == 1  # ids[0], acked: below the lowest pending id
    assert ok(admin, "dlq", "replay", "--force", "--all")
    with acl_redis.client("streamproc-admin") as client:
        assert client.xlen(f"{stream}:dlq") == 0
        ((_, log),) = client.xrange(f"{stream}:dlq:replayed")
        assert log[b"dlq_id"].decode() == dead
        assert client.xpending(stream, "g")["pending"] == 3
        assert [c["name"] for c in client.xinfo_consumers(stream, "g")] == [b"c-live"]


def test_daemon_without_provisioned_group_exits_3(
    acl_redis: AclRedis, make_settings: Callable[..., Settings], daemons: Daemons
) -> None:
    """On a stream whose consumer group was not created by `streamproc setup`, the daemon (which
    may not create groups) exits 3 and says to run `streamproc setup`; it creates nothing."""
    stream = "events:{unprovisioned}"
    with acl_redis.client("streamproc-producer") as producer:
        producer.xadd(stream, {"type": "page_view", "site": "s.example", "ts": "1", "path": "/"})
    settings = make_settings(redis_url=acl_redis.url("streamproc"), streams=stream)
    proc = daemons.start(settings, "--drain")
    assert exit_code(proc, 30) == 3, daemons.logs()[-3000:]
    logs = daemons.logs()
    assert "run `streamproc setup`" in logs, logs[-3000:]
    assert "Traceback" not in logs
    with acl_redis.client("streamproc-admin") as admin:
        assert admin.xinfo_groups(stream) == []


# --- Postgres roles ----------------------------------------------------------------------------


def run_roles_sql(database_url: str, **variables: str) -> str:
    """``psql -X -v ON_ERROR_STOP=1 -v name=value ... -f deploy/postgres/roles.sql``."""
    psql = shutil.which("psql") or sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
    args = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-f", str(ROLES_SQL)]
    for name, value in variables.items():
        args[1:1] = ["-v", f"{name}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_daemon_runs_as_least_privilege_postgres_role(
    make_settings: Callable[..., Settings],
    database_url: str,
    ns: str,
    redis_url: str,
    r: redis.Redis,
    stream: str,
    daemons: Daemons,
) -> None:
    """roles.sql creates owner/daemon/reader roles and the schema; `streamproc setup` migrates as
    the owner; roles.sql again narrows the grants per table. The daemon, as the daemon role,
    drains thousands of events (ledger claims, upserts, stream registration, ledger prune): exit 0
    and exact totals read back as the reader role. The daemon role cannot DROP, TRUNCATE,
    CREATE TABLE or DELETE rollup rows, and has the three timeouts set on the role itself."""
    roles = {"owner": f"{ns}_owner", "daemon": f"{ns}_daemon", "reader": f"{ns}_reader"}
    passwords = {role: secrets.token_hex(12) for role in roles.values()}
    urls = {kind: with_user(database_url, name, passwords[name]) for kind, name in roles.items()}
    try:
        first = run_roles_sql(database_url, schema=ns, **roles)
        assert "has no tables yet" in first
        with psycopg.connect(database_url, autocommit=True) as su:
            for role, password in passwords.items():
                su.execute(f"ALTER ROLE \"{role}\" PASSWORD '{password}'")
        setup = cli(
            "setup",
            "--json",
            "--redis-url",
            redis_url,
            "--database-url",
            urls["owner"],
            "--schema",
            ns,
            "--streams",
            stream,
            "--group",
            "g",
        )
        assert setup.returncode == 0, setup.stderr
        assert json.loads(setup.stdout)["migrations_applied"]
        second = run_roles_sql(database_url, schema=ns, **roles)
        assert "grants applied" in second

        entries = synth(3000, seed=22)
        produce(r, stream, entries)
        settings = make_settings(database_url=urls["daemon"])
        proc = daemons.start(settings, "--drain")
        assert exit_code(proc, 90) == 0, daemons.logs()[-3000:]
        assert "permission denied" not in daemons.logs()
        assert_totals(make_settings(database_url=urls["reader"]), entries)
        assert int(r.xlen(f"{stream}:dlq")) == sum(1 for e in entries if e.event is None)

        with psycopg.connect(urls["daemon"], autocommit=True) as conn:
            shown = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]  # SHOW returns a row
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            }
            assert shown == {
                "statement_timeout": "30s",
                "lock_timeout": "10s",
                "idle_in_transaction_session_timeout": "1min",
            }
            valid = sum(1 for e in entries if e.event is not None)
            reply: Any = r.xrange(stream)
            assert ledger_covers(conn, [eid for eid, _ in reply]) == valid  # the daemon role reads its ledger
            for statement in (
                "DROP TABLE pageviews_daily",
                "TRUNCATE pageviews_daily",
                "CREATE TABLE sneaky (x int)",
                "DELETE FROM pageviews_daily",
                "UPDATE applied_entries SET entry_seq = entry_seq + 1",
                "UPDATE applied_ranges SET capped = true",
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'x', 'x')",
                "ALTER TABLE sessions ADD COLUMN ip text",
            ):
                with pytest.raises(pge.InsufficientPrivilege):
                    conn.execute(statement)
        with psycopg.connect(urls["reader"], autocommit=True) as conn:
            assert conn.execute("SELECT sum(views) > 0 FROM pageviews_daily").fetchone() == (True,)
            for statement in (
                "SELECT count(*) FROM producer_ids",
                "INSERT INTO events_hourly VALUES ('x', now(), 'custom', 'x', 1)",
            ):
                with pytest.raises((pge.InsufficientPrivilege, pge.ReadOnlySqlTransaction)):
                    conn.execute(statement)
    finally:
        with psycopg.connect(database_url, autocommit=True) as su:
            su.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')
            names = ", ".join(f'"{name}"' for name in roles.values())
            existing = su.execute("SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", (list(roles.values()),))
            if existing.fetchone() == (len(roles),):
                su.execute(f"DROP OWNED BY {names}")
                su.execute(f"DROP ROLE {names}")


# --- TLS ---------------------------------------------------------------------------------------


@dataclass
class Tls:
    directory: Path
    redis: RedisServer
    postgres: PostgresServer
    ca: Path
    wrong_ca: Path
    app_password: str

    def redis_url(self, ca: Path | None = None) -> str:
        return f"rediss://127.0.0.1:{self.redis.port}/0?ssl_ca_certs={quote(str(ca or self.ca))}&ssl_cert_reqs=required"

    def database_url(self, ca: Path | None = None, password: str | None = None, port: int | None = None) -> str:
        return (
            f"postgresql://app:{password or self.app_password}@127.0.0.1:{port or self.postgres.port}/streamproc"
            f"?sslmode=verify-full&sslrootcert={quote(str(ca or self.ca))}"
        )


def openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def make_ca(directory: Path, name: str) -> Path:
    openssl(
        directory,
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=streamproc test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return directory / f"{name}.crt"


def make_server_cert(directory: Path, ca: str) -> tuple[Path, Path]:
    (directory / "server.ext").write_text(
        "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    openssl(
        directory,
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
    )  # fmt: skip
    openssl(
        directory,
        "x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return directory / "server.crt", directory / "server.key"


def enable_postgres_tls(pg: PostgresServer, cert: Path, key: Path) -> None:
    """ssl=on with the server key owned by the server's user, 0600; only hostssl connections
    (the superuser by trust, others by SCRAM password); restart."""
    for src in (cert, key):
        dst = pg.data / src.name
        shutil.copy(src, dst)
        dst.chmod(0o600)
        if os.geteuid() == 0:
            shutil.chown(dst, "postgres", "postgres")
    with open(pg.data / "postgresql.conf", "a") as fh:
        fh.write(f"ssl = on\nssl_cert_file = '{cert.name}'\nssl_key_file = '{key.name}'\n")
    hba = [
        "local all all trust",
        "hostssl all streamproc 127.0.0.1/32 trust",
        "hostssl all all 127.0.0.1/32 scram-sha-256",
    ]
    (pg.data / "pg_hba.conf").write_text("\n".join(hba) + "\n")
    pg.stop()
    pg.start()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    """A throwaway CA (and an unrelated one), a server certificate for 127.0.0.1/localhost, a
    TLS-only redis-server and a Postgres that refuses unencrypted connections."""
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "ca")
    wrong_ca = make_ca(directory, "other-ca")
    cert, key = make_server_cert(directory, "ca")
    port = free_port()
    redis_server = start_redis(
        directory / "redis",
        port=port,
        extra=[
            "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
        ],
    )  # fmt: skip
    try:
        pg = start_postgres()
        try:
            password = "app-pw-" + secrets.token_hex(12)
            with psycopg.connect(pg.url, autocommit=True) as conn:
                conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{password}'")
                conn.execute("GRANT CREATE ON DATABASE streamproc TO app")
            enable_postgres_tls(pg, cert, key)
            yield Tls(directory, redis_server, pg, ca, wrong_ca, password)
        finally:
            pg.destroy()
    finally:
        redis_server.stop()
        shutil.rmtree(redis_server.directory, ignore_errors=True)


def test_daemon_over_verified_tls(tls: Tls, make_settings: Callable[..., Settings], ns: str, daemons: Daemons) -> None:
    """Redis over `rediss://` with `ssl_cert_reqs=required` and the CA, Postgres with
    `sslmode=verify-full` (host 127.0.0.1 matches the certificate's IP SAN) and a SCRAM password:
    migrate, produce, drain - exit 0, exact totals. Plain-text connections are refused by both
    servers, so everything above went over TLS."""
    settings = make_settings(redis_url=tls.redis_url(), database_url=tls.database_url())
    migrated = cli("migrate", "--database-url", settings.database_url, "--schema", ns)
    assert migrated.returncode == 0, migrated.stderr
    entries = synth(2000, seed=23)
    with redis.Redis.from_url(settings.redis_url) as client:
        produce(client, settings.streams[0], entries)
        proc = daemons.start(settings, "--drain")
        assert exit_code(proc, 90) == 0, daemons.logs()[-3000:]
        assert dlq_total(client, list(settings.streams)) == sum(1 for e in entries if e.event is None)
    assert_totals(settings, entries)

    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None and row[0] is True, row
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(tls.database_url().split("?")[0] + "?sslmode=disable", connect_timeout=5).close()
    with (
        redis.Redis.from_url(f"redis://127.0.0.1:{tls.redis.port}/0", socket_timeout=2) as plain,
        pytest.raises(rx.ConnectionError),
    ):
        plain.ping()


def test_wrong_ca_fails_with_one_clear_line(tls: Tls, ns: str) -> None:
    """With a CA that did not sign the server certificate, `streamproc migrate` (Postgres) and
    `streamproc status` (Redis) fail with one line naming the certificate problem - no
    traceback, no password. For Postgres it is a configuration problem: exit 2."""
    migrated = cli("migrate", "--database-url", tls.database_url(ca=tls.wrong_ca), "--schema", ns)
    assert migrated.returncode == 2, migrated.stderr
    line = one_error_line(migrated.stderr)
    assert "certificate verify failed" in line, line
    assert tls.app_password not in migrated.stderr + migrated.stdout

    status = cli("status", "--redis-url", tls.redis_url(ca=tls.wrong_ca), "--streams", "events", "--group", "g")
    assert status.returncode == 2, status.stderr
    line = one_error_line(status.stderr)
    assert "certificate verify failed" in line.lower() or "CERTIFICATE_VERIFY_FAILED" in line, line
    assert "ssl_ca_certs" in line, line


def test_daemon_refused_by_redis_tls_exits_2(tls: Tls, make_settings: Callable[..., Settings]) -> None:
    """A Redis certificate the URL's CA did not sign is a configuration problem (exit 2, one line
    naming ssl_ca_certs), as a Postgres certificate the client rejects is: not an unreachable
    server retried for ever. (rediss:// to a plain-text port cannot be told from a server that
    does not answer: the TLS handshake times out, and that stays transient.)"""
    exc = raised_by(lambda: redis.Redis.from_url(tls.redis_url(ca=tls.wrong_ca), socket_timeout=5).ping())
    assert classify(exc).kind is Kind.PERMANENT, exc
    assert isinstance(translate(exc), SourceMisconfigured) and translate(exc).exit_code == 2, exc

    run = subprocess.run(
        [sys.executable, "-m", "streamproc", "run"],
        env=daemon_env(make_settings(redis_url=tls.redis_url(ca=tls.wrong_ca), database_url=tls.database_url())),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    (fatal,) = [json.loads(x) for x in run.stdout.splitlines() + run.stderr.splitlines() if '"fatal"' in x]
    assert "certificate verify failed" in fatal["error"].lower() and "ssl_ca_certs" in fatal["error"], fatal


def raised_by(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except rx.RedisError as exc:  # the server's refusal is the point
        return exc
    raise AssertionError("the call did not fail")


# --- secrets hygiene ---------------------------------------------------------------------------


def test_secrets_never_in_logs_help_errors_or_status(
    acl_redis: AclRedis, tls: Tls, make_settings: Callable[..., Settings], ns: str, daemons: Daemons
) -> None:
    """With real passwords in both URLs (Redis ACL user, Postgres SCRAM role) and a visitor
    secret: `setup`, a debug-level `run --drain` (malformed entries included), `status` and
    `status --json`, `migrate` and `status` against unreachable servers, and `--help` of `run`
    and `setup` with the secrets in the environment. No output contains a secret; URLs that are
    shown come out masked as `user:***@host`."""
    stream = "events:{sec}"
    visitor_secret = "visitor-secret-" + secrets.token_hex(16)
    daemon_url = acl_redis.url("streamproc")
    monitor_url = acl_redis.url("streamproc-monitor")
    database_url = tls.database_url()
    leaks = [visitor_secret, tls.app_password, *acl_redis.passwords.values()]
    outputs: dict[str, str] = {}

    def check(name: str, done: subprocess.CompletedProcess[str], code: int) -> str:
        text = done.stdout + done.stderr
        assert done.returncode == code, f"{name}: {text[-2000:]}"
        outputs[name] = text
        return text

    base = {"STREAMPROC_DB_SCHEMA": ns, "STREAMPROC_STREAMS": stream, "STREAMPROC_GROUP": "g"}
    check(
        "setup",
        cli(
            "setup",
            env={
                **base,
                "STREAMPROC_REDIS_URL": acl_redis.url("streamproc-admin"),
                "STREAMPROC_DATABASE_URL": database_url,
            },
        ),
        0,
    )
    entries = synth(600, seed=24, bad_ratio=0.05)
    with acl_redis.client("streamproc-producer") as producer:
        produce(producer, stream, entries)
    settings = make_settings(
        redis_url=daemon_url, database_url=database_url, streams=stream, visitor_secret=visitor_secret
    )
    proc = daemons.start(settings, "--drain", STREAMPROC_LOG_LEVEL="debug")
    assert exit_code(proc, 60) == 0, daemons.logs()[-3000:]
    outputs["run --drain"] = daemons.logs()
    (starting,) = log_lines(proc.logfile, "starting")  # type: ignore[attr-defined]  # set by Daemons.start
    assert starting["redis_url"] == f"redis://streamproc:***@127.0.0.1:{acl_redis.server.port}/0"
    assert starting["database_url"].startswith(f"postgresql://app:***@127.0.0.1:{tls.postgres.port}/")
    assert starting["visitor_secret"] == "***"

    status_json = check("status --json", cli("status", "--json", env={**base, "STREAMPROC_REDIS_URL": monitor_url}), 0)
    report = json.loads(status_json)
    assert report["redis_url"] == f"redis://streamproc-monitor:***@127.0.0.1:{acl_redis.server.port}/0"
    assert report["streams"][0]["pending"] == 0 and report["streams"][0]["lag"] == 0
    assert report["streams"][0]["dlq_length"] == sum(1 for e in entries if e.event is None)
    assert ":***@" in check("status", cli("status", env={**base, "STREAMPROC_REDIS_URL": monitor_url}), 0)

    closed = free_port()
    down = check(
        "migrate, unreachable",
        cli("migrate", env={**base, "STREAMPROC_DATABASE_URL": tls.database_url(port=closed)}),
        1,
    )
    one_error_line(down)
    down = check(
        "status, unreachable",
        cli(
            "status",
            env={
                **base,
                "STREAMPROC_REDIS_URL": f"redis://streamproc:{acl_redis.passwords['streamproc']}@127.0.0.1:{closed}/0",
            },
        ),
        1,
    )
    assert ":***@" in one_error_line(down)

    env_with_secrets = {
        **base,
        "STREAMPROC_REDIS_URL": daemon_url,
        "STREAMPROC_DATABASE_URL": database_url,
        "STREAMPROC_VISITOR_SECRET": visitor_secret,
    }
    check("run --help", cli("run", "--help", env=env_with_secrets), 0)
    check("setup --help", cli("setup", "--help", env=env_with_secrets), 0)

    for name, text in outputs.items():
        for secret in leaks:
            assert secret not in text, f"a secret appears in the output of {name}"


# --- passwords outside the URL's user-info are masked too -----------------------------------


def test_query_string_passwords_are_masked(
    acl_redis: AclRedis, tls: Tls, make_settings: Callable[..., Settings], ns: str, daemons: Daemons
) -> None:
    """Both libpq and redis-py accept the password as a URL query parameter; the daemon works
    with it, and the `starting` log line must not show it."""
    stream = "events:{qs}"
    setup = cli(
        "setup",
        "--redis-url",
        acl_redis.url("streamproc-admin"),
        "--database-url",
        tls.database_url(),
        "--schema",
        ns,
        "--streams",
        stream,
        "--group",
        "g",
    )
    assert setup.returncode == 0, setup.stderr
    redis_pw = acl_redis.passwords["streamproc"]
    redis_url = f"redis://streamproc@127.0.0.1:{acl_redis.server.port}/0?password={redis_pw}"
    database_url = (
        f"postgresql://app@127.0.0.1:{tls.postgres.port}/streamproc?password={tls.app_password}"
        f"&sslmode=verify-full&sslrootcert={quote(str(tls.ca))}"
    )
    settings = make_settings(redis_url=redis_url, database_url=database_url, streams=stream)
    proc = daemons.start(settings, "--drain")
    code = exit_code(proc, 60)
    logs = daemons.logs()
    assert code == 0, logs[-3000:]
    (starting,) = log_lines(proc.logfile, "starting")  # type: ignore[attr-defined]  # set by Daemons.start
    assert redis_pw not in json.dumps(starting), "Redis password logged in clear"
    assert tls.app_password not in json.dumps(starting), "Postgres password logged in clear"


def test_multi_host_database_url_starts_and_is_masked(
    acl_redis: AclRedis, tls: Tls, make_settings: Callable[..., Settings], ns: str, daemons: Daemons
) -> None:
    """A libpq multi-host URL (failover: `host1:port1,host2:port2`) with a password works with
    psycopg; the daemon must start with it, drain, and log it masked."""
    stream = "events:{multihost}"
    setup = cli(
        "setup",
        "--redis-url",
        acl_redis.url("streamproc-admin"),
        "--database-url",
        tls.database_url(),
        "--schema",
        ns,
        "--streams",
        stream,
        "--group",
        "g",
    )
    assert setup.returncode == 0, setup.stderr
    port = tls.postgres.port
    database_url = (
        f"postgresql://app:{tls.app_password}@127.0.0.1:{port},127.0.0.1:{port}/streamproc"
        f"?sslmode=verify-full&sslrootcert={quote(str(tls.ca))}&target_session_attrs=read-write"
    )
    settings = make_settings(redis_url=acl_redis.url("streamproc"), database_url=database_url, streams=stream)
    proc = daemons.start(settings, "--drain")
    code = exit_code(proc, 60)
    logs = daemons.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert code == 0, logs[-3000:]
    assert tls.app_password not in logs
