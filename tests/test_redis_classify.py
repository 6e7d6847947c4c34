"""The Redis failure classifier, fed with errors that real servers raise.

Each case provokes the condition on a throwaway ``redis-server`` (or a real
Postgres, or a socket that speaks HTTP) and checks the class the README's
failure table gives it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from streamproc.dev.localservers import RedisCluster as LocalCluster
from streamproc.dev.localservers import RedisServer, free_port, start_redis, start_redis_cluster
from streamproc.errors import GroupMissing, SourceMisconfigured, SourceUnavailable
from streamproc.portprobe import speaks_postgres
from streamproc.redis.classify import Kind, classify, translate
from streamproc.redis.source import RedisSource
from tests.chaos.conftest import host_port


def attempt(call: Callable[[], Any]) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # the real server's error is the point of the test
        return exc
    return None


def raised(call: Callable[[], Any]) -> BaseException:
    exc = attempt(call)
    assert exc is not None, "the call did not fail"
    return exc


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = start_redis(tmp_path / "r")
    yield s
    s.kill()


def client(port: int, **kwargs: Any) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=10, **kwargs)


def blocked_read_error(server: RedisServer, action: Callable[[redis.Redis], Any]) -> BaseException:
    """The error a blocked XREADGROUP gets when ``action`` runs on another connection."""
    admin = client(server.port)
    admin.delete("st")
    admin.xgroup_create("st", "g", id="$", mkstream=True)
    reader = client(server.port)
    result: dict[str, BaseException] = {}

    def read() -> None:
        result["exc"] = raised(lambda: reader.xreadgroup("g", "c", {"st": ">"}, block=0))

    thread = threading.Thread(target=read)
    thread.start()
    deadline = time.monotonic() + 10
    while int(admin.info("clients")["blocked_clients"]) == 0:  # the reader is inside its BLOCK
        assert time.monotonic() < deadline
        time.sleep(0.01)
    action(admin)
    thread.join(10)
    return result["exc"]


def test_vanished_stream_and_group_are_exit_3(server: RedisServer) -> None:
    """DEL, FLUSHALL and XGROUP DESTROY under a blocked read, and NOGROUP on the next read, are
    all the vanished-group class (GroupMissing, exit 3)."""
    cases = {
        "DEL": blocked_read_error(server, lambda c: c.delete("st")),
        "FLUSHALL": blocked_read_error(server, lambda c: c.flushall()),
        "XGROUP DESTROY": blocked_read_error(server, lambda c: c.xgroup_destroy("st", "g")),
        "NOGROUP": raised(lambda: client(server.port).xreadgroup("g", "c", {"nothing": ">"})),
    }
    for name, exc in cases.items():
        assert classify(exc).kind is Kind.VANISHED, (name, exc)
        assert isinstance(translate(exc), GroupMissing) and translate(exc).exit_code == 3


def test_transient_conditions(server: RedisServer, tmp_path: Path) -> None:
    """READONLY (a replica), MASTERDOWN (a replica whose primary is gone, stale data refused),
    OOM (maxmemory), BUSY (a long script), a CLIENT PAUSE longer than the socket timeout,
    a refused connection and too many clients: all transient (back off, retry)."""
    c = client(server.port)
    replica = start_redis(tmp_path / "replica", extra=("--replicaof", "127.0.0.1", str(server.port)))
    orphan = start_redis(
        tmp_path / "orphan", extra=("--replicaof", "127.0.0.1", str(free_port()), "--replica-serve-stale-data", "no")
    )
    try:
        cases: dict[str, BaseException] = {
            "READONLY": raised(lambda: client(replica.port).xadd("st", {"a": "1"})),
            "MASTERDOWN": raised(lambda: client(orphan.port).xinfo_groups("st")),
            "refused": raised(lambda: client(free_port()).ping()),
        }
        c.config_set("maxmemory", "1")
        cases["OOM"] = raised(lambda: c.xadd("st", {"a": "1"}))
        c.config_set("maxmemory", "0")

        c.config_set("maxclients", "1")  # `c` holds the one connection allowed
        cases["max clients"] = raised(lambda: client(server.port).ping())
        c.config_set("maxclients", "10000")

        c.config_set("busy-reply-threshold", "10")
        script = threading.Thread(target=lambda: raised(lambda: client(server.port).eval("while true do end", 0)))
        script.start()
        deadline = time.monotonic() + 10
        while not str(busy := attempt(lambda: client(server.port).ping())).startswith("BUSY"):
            assert time.monotonic() < deadline, busy
            time.sleep(0.01)
        assert busy is not None
        cases["BUSY"] = busy
        client(server.port).script_kill()
        script.join()

        c.client_pause(3000, all=False)  # WRITE pause: reads answer, XREADGROUP (a write) waits
        once = redis.Redis(port=server.port, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
        cases["CLIENT PAUSE"] = raised(lambda: once.xadd("st", {"a": 1}))
        c.client_unpause()
    finally:
        replica.kill()
        orphan.kill()
    for name, exc in cases.items():
        assert classify(exc).kind is Kind.TRANSIENT, (name, exc)
        assert isinstance(translate(exc), SourceUnavailable), name


def test_permanent_problems(server: RedisServer, database_url: str) -> None:
    """NOPERM, a wrong password, no password, a wrong key type, a database out of range, an
    unknown command, a server that answers in HTTP, and a Postgres server: permanent (exit 2)."""
    c = client(server.port)
    c.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xadd"])
    c.set("plain", "x")
    http = _http_like_server()
    cases: dict[str, BaseException] = {
        "NOPERM": raised(lambda: client(server.port, username="limited", password="pw").xadd("st", {"a": "1"})),
        "WRONGPASS": raised(lambda: client(server.port, username="limited", password="wrong").ping()),
        "WRONGTYPE": raised(lambda: c.xreadgroup("g", "c", {"plain": ">"})),
        "db range": raised(lambda: client(server.port, db=9999).ping()),
        "unknown command": raised(lambda: c.execute_command("XNOSUCHTHING", "st")),  # type: ignore[no-untyped-call]
        "HTTP": raised(lambda: client(http).ping()),
    }
    c.config_set("requirepass", "secret")
    cases["NOAUTH"] = raised(lambda: client(server.port).ping())
    for name, exc in cases.items():
        assert classify(exc).kind is Kind.PERMANENT, (name, exc)
        assert isinstance(translate(exc), SourceMisconfigured) and translate(exc).exit_code == 2, name

    pg = host_port(database_url)
    closed = raised(lambda: client(pg[1]).ping())
    assert classify(closed).kind is Kind.TRANSIENT  # alone, a silent close could be a proxy
    assert speaks_postgres(pg) and not speaks_postgres(("127.0.0.1", server.port))
    assert isinstance(translate(closed, probe=pg), SourceMisconfigured)


def _http_like_server() -> int:
    """A loopback socket that answers every connection like an HTTP server; returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])

    def serve() -> None:
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_group_check_denied_by_the_acl_is_a_permission_problem(server: RedisServer) -> None:
    """A daemon user that may not run XINFO GROUPS gets NOPERM on the start's group check: a
    missing right (SourceMisconfigured, exit 2, naming the right), not a missing or vanished group
    (exit 3): the group is there."""
    c = client(server.port)
    c.xgroup_create("st", "g", id="0", mkstream=True)
    c.acl_setuser("noinfo", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-xinfo"])
    source = RedisSource(f"redis://noinfo:pw@127.0.0.1:{server.port}/0", ["st"], "g", "c1", socket_timeout_s=10)
    with pytest.raises(SourceMisconfigured, match="lacks a permission") as denied:
        source.ensure_groups("0", known=lambda: {"st"})
    assert denied.value.exit_code == 2
    source.close()


@pytest.fixture
def small_cluster() -> Iterator[LocalCluster]:
    c = start_redis_cluster(primaries=3, replicas=0)
    yield c
    c.stop()


def test_a_moving_slot_is_transient_on_a_cluster_client_and_a_setting_on_a_plain_one(
    small_cluster: LocalCluster,
) -> None:
    """MOVED (a plain client on a node that does not serve the slot), ASK (a slot migrating,
    the stream already on the importing node), the same ASK from a cluster MULTI/EXEC (redis-py
    does not redirect a transaction with ASKING), TRYAGAIN (a read of two streams of a slot half
    migrated) and redis-py's `TTL exhausted` (two nodes sending each other's MOVED): on a
    cluster client all are the slot map changing, transient; on a plain client MOVED and ASK
    name the `redis_cluster` setting (exit 2). Through :class:`RedisSource` the MULTI's redirect
    is a retry, and the read succeeds once the migration ends."""
    rc = RedisCluster.from_url(small_cluster.url, socket_timeout=10)
    stream, other = "cls:{r}", "cls:other:{r}"
    for key in (stream, other):
        rc.xgroup_create(key, "g", id="0", mkstream=True)
        rc.xadd(key, {"n": "1"})
    slot = int(rc.keyslot(stream))
    source = client(int(rc.get_node_from_key(stream).port))
    target = next(client(n.port) for n in small_cluster.nodes if n.port != int(rc.get_node_from_key(stream).port))
    source_id, target_id = (str(c.execute_command("CLUSTER", "MYID").decode()) for c in (source, target))
    target_port = int(target.connection_pool.connection_kwargs["port"])

    redirects: dict[str, BaseException] = {"MOVED": raised(lambda: target.xreadgroup("g", "c", {stream: ">"}))}
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    source.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 10_000, "KEYS", stream)
    redirects["ASK"] = raised(lambda: source.xinfo_groups(stream))

    def multi() -> None:
        pipe = rc.pipeline(transaction=True)
        pipe.xinfo_stream(stream)
        pipe.xreadgroup("g", "c", {stream: ">"})
        pipe.execute()

    redirects["MULTI"] = raised(multi)
    transient = {"TRYAGAIN": raised(lambda: source.xreadgroup("g", "c", {stream: ">", other: ">"}))}

    reader = RedisSource(small_cluster.url, [stream], "g", "c", socket_timeout_s=10, cluster=True)
    with pytest.raises(SourceUnavailable, match="slot map changed"):
        reader.read_new(10, 0)
    for node in small_cluster.nodes:
        client(node.port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    assert len(reader.read_new(10, 0)) == 1  # the new slot map, on the importing node
    reader.close()

    # Two nodes each naming the other as the owner of an empty slot: redis-py gives up.
    lost = "cls:{lost}"
    owner = client(int(rc.get_node_from_key(lost).port))
    elsewhere = next(n for n in small_cluster.nodes if n.port != int(rc.get_node_from_key(lost).port))
    owner.execute_command(
        "CLUSTER",
        "SETSLOT",
        int(rc.keyslot(lost)),
        "NODE",
        client(elsewhere.port).execute_command("CLUSTER", "MYID").decode(),
    )
    transient["TTL exhausted"] = raised(lambda: RedisCluster.from_url(small_cluster.url, socket_timeout=10).get(lost))
    rc.close()

    for name, exc in {**redirects, **transient}.items():
        assert classify(exc, cluster=True).kind is Kind.TRANSIENT, (name, exc)
        assert isinstance(translate(exc, cluster=True), SourceUnavailable), name
    for name, exc in redirects.items():
        plain = translate(exc)
        assert classify(exc).kind is Kind.PERMANENT, (name, exc)
        assert isinstance(plain, SourceMisconfigured) and plain.exit_code == 2, name
        assert "STREAMPROC_REDIS_CLUSTER=1" in str(plain) and name.replace("MULTI", "ASK") in str(plain), str(plain)


def _silent_server() -> int:
    """A loopback socket that accepts connections and never says a word; returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    held: list[socket.socket] = []

    def serve() -> None:
        with listener:
            while True:
                try:
                    held.append(listener.accept()[0])
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return port


def test_tls_url_on_a_plain_text_redis_port_is_configuration(server: RedisServer) -> None:
    """rediss:// to a plain-text Redis: the server reads the TLS hello as an unfinished inline
    command and waits, so the client times out. The port answers a plain PING, so it is known
    for sure to be no TLS port: permanent (exit 2), naming the fix. Without `tls` the same
    timeout stays transient."""
    tls_client = redis.Redis(port=server.port, ssl=True, ssl_cert_reqs="none", socket_timeout=1)
    exc = raised(tls_client.ping)
    assert classify(exc).kind is Kind.TRANSIENT
    error = translate(exc, probe=("127.0.0.1", server.port), tls=True)
    assert isinstance(error, SourceMisconfigured)
    assert "is rediss:// (TLS) but" in str(error) and "answers plain-text Redis: use redis://" in str(error)
    assert isinstance(translate(exc, probe=("127.0.0.1", server.port)), SourceUnavailable)


def test_tls_url_on_a_silent_port_says_so_in_the_retry_line() -> None:
    """rediss:// to a port that answers neither TLS nor plain Redis: transient (it may be a TLS
    port whose server hangs), and the retry line asks whether the port is a TLS port."""
    port = _silent_server()
    tls_client = redis.Redis(port=port, ssl=True, ssl_cert_reqs="none", socket_timeout=1)
    error = translate(raised(tls_client.ping), probe=("127.0.0.1", port), tls=True)
    assert isinstance(error, SourceUnavailable)
    assert "no TLS handshake answer: is the port a TLS port?" in str(error)


def test_status_with_a_tls_url_on_a_plain_port_exits_2(server: RedisServer) -> None:
    """The command line: one line naming the Redis URL, exit 2, no endless retry; `check` says
    the same on its redis line."""
    from tests.test_config import run_cli

    url = f"rediss://127.0.0.1:{server.port}/0?ssl_cert_reqs=none"
    res = run_cli("status", env={"STREAMPROC_REDIS_URL": url})
    assert res.returncode == 2, res.stderr
    assert "answers plain-text Redis" in res.stderr and "Traceback" not in res.stderr
    checked = run_cli("check", env={"STREAMPROC_REDIS_URL": url})
    assert "answers plain-text Redis: use redis://" in checked.stdout, checked.stdout
