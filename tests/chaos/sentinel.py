"""A throwaway Redis Sentinel set: one primary, one replica, three sentinels on loopback.

Real ``redis-server`` and ``redis-sentinel`` processes (Debian package
``redis-sentinel``, installed by ``setup.sh test``), each in its own directory
under the test's temporary directory, all killed at the end of the test.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from streamproc.dev.localservers import RedisServer, ServerError, free_port, start_redis

SERVICE = "mymaster"


def _sentinel_binary() -> str:
    path = shutil.which("redis-sentinel")
    if path is None:
        raise ServerError(
            "`redis-sentinel` not found: install the Debian package redis-sentinel (./setup.sh test does)"
        )
    return path


@dataclass
class SentinelProcess:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass
class SentinelSet:
    """Data nodes and sentinels of one test; ``url`` is the daemon's ``redis+sentinel://`` URL."""

    directory: Path
    nodes: list[RedisServer] = field(default_factory=list)
    sentinels: list[SentinelProcess] = field(default_factory=list)
    password: str | None = None
    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        query = [f"ssl_ca_certs={quote(str(self.tls.ca))}", "ssl_cert_reqs=required"] if self.tls else []
        if not self.password:
            return f"{scheme}://{hosts}/{SERVICE}/0" + (f"?{'&'.join(query)}" if query else "")
        query.insert(0, f"sentinel_password={self.password}")
        return f"{scheme}://:{self.password}@{hosts}/{SERVICE}/0?{'&'.join(query)}"

    def client(self, port: int) -> redis.Redis:
        """A client of a data node or a sentinel of this set (TLS when the set speaks it)."""
        return redis.Redis(port=port, socket_timeout=5, password=self.password, **_tls_kwargs(self.tls))

    def ask(self, *command: str | int) -> object:
        """A command to the first sentinel that answers."""
        for s in self.sentinels:
            with self.client(s.port) as client:
                try:
                    return client.execute_command(*command)
                except redis.ConnectionError:
                    continue
        raise ServerError("no sentinel answers")

    def primary_port(self) -> int:
        """The data node every sentinel names as primary (waits until they agree)."""
        ports: set[int] = set()

        def agreed() -> bool:
            ports.clear()
            for s in self.sentinels:
                with self.client(s.port) as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(SERVICE)[1]))
            return len(ports) == 1

        _wait(agreed, 30, "the sentinels to agree on the primary")
        return ports.pop()

    def node(self, port: int) -> RedisServer:
        return next(n for n in self.nodes if n.port == port)

    def failover(self) -> int:
        """``SENTINEL FAILOVER`` (coordinated: the replica catches up before it is promoted), then
        wait until every sentinel and both data nodes agree on the new roles; returns its port."""
        old = self.primary_port()
        self.ask("SENTINEL", "FAILOVER", SERVICE)
        _wait(lambda: self.primary_port() != old, 60, "the sentinels to name a new primary")
        new = self.primary_port()
        _wait(lambda: self._role(new) == "master" and self._replica_synced(old), 60, "the old primary to follow")
        return new

    def ready(self) -> bool:
        """Every sentinel sees the primary, the replica (synced) and the two other sentinels."""
        for s in self.sentinels:
            with self.client(s.port) as client:
                try:
                    master = client.sentinel_master(SERVICE)
                    replicas = client.sentinel_slaves(SERVICE)
                except redis.ConnectionError:
                    return False
            if int(master["num-other-sentinels"]) < len(self.sentinels) - 1 or not master["is_master"]:
                return False
            if not any(not r["is_sdown"] and r.get("master-link-status") == "ok" for r in replicas):
                return False
        return True

    def _role(self, port: int) -> str:
        with self.client(port) as client:
            return str(client.info("replication")["role"])

    def _replica_synced(self, port: int) -> bool:
        with self.client(port) as client:
            info = client.info("replication")
        return bool(info["role"] == "slave" and info["master_link_status"] == "up")

    def stop(self) -> None:
        for s in self.sentinels:
            s.kill()
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a certificate for 127.0.0.1 it signed: every node and sentinel speaks TLS only."""

    ca: Path
    cert: Path
    key: Path

    def server_lines(self) -> list[str]:
        """Config lines (``name value``) of a TLS-only node or sentinel; it connects to the others over TLS."""
        return [
            f"tls-cert-file {self.cert}",
            f"tls-key-file {self.key}",
            f"tls-ca-cert-file {self.ca}",
            "tls-auth-clients no",
            "tls-replication yes",
        ]


def _tls_kwargs(tls: TlsFiles | None) -> dict[str, Any]:
    return {"ssl": True, "ssl_ca_certs": str(tls.ca), "ssl_cert_reqs": "required"} if tls else {}


def _start_node(directory: Path, tls: TlsFiles | None, extra: tuple[str, ...]) -> RedisServer:
    if tls is None:
        return start_redis(directory, extra=extra)
    port = free_port()
    flags = [
        f"--{word}" if i == 0 else word for line in tls.server_lines() for i, word in enumerate(line.split(" ", 1))
    ]
    return start_redis(directory, port=port, extra=("--port", "0", "--tls-port", str(port), *flags, *extra))


def start_sentinel_set(
    directory: Path, password: str | None = None, sentinels: int = 3, tls: TlsFiles | None = None
) -> SentinelSet:
    """Primary + replica (``replicaof``) + ``sentinels`` sentinels (quorum 2), ready to fail over;
    with ``tls``, every one of them speaks TLS only, to clients and to each other."""
    group = SentinelSet(directory, password=password, tls=tls)
    auth = ("--requirepass", password, "--masterauth", password) if password else ()
    try:
        primary = _start_node(directory / "node0", tls, auth)
        group.nodes.append(primary)
        replica = _start_node(directory / "node1", tls, (*auth, "--replicaof", "127.0.0.1", str(primary.port)))
        group.nodes.append(replica)
        for i in range(sentinels):
            group.sentinels.append(_start_sentinel(directory / f"sentinel{i}", primary.port, password, tls))
        _wait(group.ready, 60, "the sentinels to see the primary, the replica and each other")
    except BaseException:
        group.stop()
        raise
    return group


def _start_sentinel(directory: Path, primary_port: int, password: str | None, tls: TlsFiles | None) -> SentinelProcess:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        *([f"port {port}"] if tls is None else ["port 0", f"tls-port {port}", *tls.server_lines()]),
        "bind 127.0.0.1",
        f"dir {directory}",
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2",
        f"sentinel down-after-milliseconds {SERVICE} 2000",
        f"sentinel failover-timeout {SERVICE} 20000",
        f"sentinel parallel-syncs {SERVICE} 1",
    ]
    if password:
        lines += [
            f"sentinel auth-pass {SERVICE} {password}",
            f"requirepass {password}",
            f"sentinel sentinel-pass {password}",
        ]
    conf = directory / "sentinel.conf"
    conf.write_text("\n".join(lines) + "\n")
    with open(directory / "sentinel.log", "ab") as log:
        proc = subprocess.Popen(
            [_sentinel_binary(), str(conf)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    sentinel = SentinelProcess(port, directory, proc)
    probe = redis.Redis(port=port, password=password, socket_timeout=5, **_tls_kwargs(tls))
    try:
        _wait(lambda: proc.poll() is None and bool(probe.ping()), 20, "a sentinel")
    finally:
        probe.close()
    return sentinel
