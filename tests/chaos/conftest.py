"""Fixtures of the fault suite: per-test throwaway servers and TCP proxies.

Tests here kill, stop and restart servers. They never touch the session-wide
servers of ``tests/conftest.py`` (other tests share them): whatever a test
kills or reconfigures it starts itself, through ``throwaway``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from redis import Redis

from streamproc.dev.localservers import PostgresServer, RedisServer, free_port, start_postgres, start_redis
from tests.chaos.proxy import TcpProxy


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port, url
    return parts.hostname, parts.port


class Throwaway:
    """Servers and clients of one test, all stopped, closed and removed at its end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redises: list[RedisServer] = []
        self.postgreses: list[PostgresServer] = []
        self.clients: list[Redis] = []

    def redis(self, name: str = "redis", port: int | None = None, extra: Sequence[str] = ()) -> RedisServer:
        """A Redis of this test's own, in ``tmp/name`` (a restart on the same dir reuses its files)."""
        server = start_redis(self.tmp / name, port or free_port(), extra)
        self.redises.append(server)
        return server

    def restart_redis(self, old: RedisServer) -> RedisServer:
        """A new process on the old one's port, directory and arguments."""
        assert old.process.poll() is not None, "stop or kill the old process first"
        server = start_redis(old.directory, old.port, old.args)
        self.redises.append(server)
        with redis.Redis.from_url(server.url) as probe:  # wait until the AOF is loaded
            deadline = time.monotonic() + 30
            while True:
                try:
                    probe.ping()
                    break
                except redis.BusyLoadingError:
                    assert time.monotonic() < deadline, "Redis still loading after 30 s"
                    time.sleep(0.05)
        return server

    def postgres(self, durable: bool = False) -> PostgresServer:
        server = start_postgres(durable=durable)  # its own temp dir, owned by the postgres user
        self.postgreses.append(server)
        return server

    def client(self, url: str) -> Redis:
        c = Redis.from_url(url, socket_timeout=30)
        self.clients.append(c)
        return c

    def cleanup(self) -> None:
        for c in self.clients:
            c.close()
        for r in self.redises:
            r.kill()
        for d in {r.directory for r in self.redises}:
            shutil.rmtree(d, ignore_errors=True)
        for pg in self.postgreses:
            pg.destroy()


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[Throwaway]:
    t = Throwaway(tmp_path)
    try:
        yield t
    finally:
        t.cleanup()


class Proxies:
    def __init__(self) -> None:
        self.made: list[TcpProxy] = []

    def __call__(self, target_url: str, postgres: bool = False) -> TcpProxy:
        proxy = TcpProxy(host_port(target_url), postgres=postgres).start()
        self.made.append(proxy)
        return proxy


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    """``proxies(url)`` starts a TCP proxy to the server at ``url``; all closed at test end."""
    made = Proxies()
    try:
        yield made
    finally:
        for p in made.made:
            p.close()


def via(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    hostport = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{hostport}" if len(netloc) == 2 else hostport).geturl()
