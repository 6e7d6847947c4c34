"""Choosing the suite's servers: STREAMPROC_TEST_SERVERS is obeyed, and never quietly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

from streamproc.dev.localservers import free_port, port_share
from tests.testservers import ServersError, servers_mode, session_servers


def test_an_unknown_mode_is_refused_with_the_setting_named() -> None:
    """A typo in STREAMPROC_TEST_SERVERS stops the run and says what is accepted."""
    with pytest.raises(ServersError, match=r"STREAMPROC_TEST_SERVERS='docker'.*auto, containers, local"):
        servers_mode({"STREAMPROC_TEST_SERVERS": "docker"})
    assert servers_mode({}) == "auto"


def test_containers_without_an_engine_fail_instead_of_falling_back(tmp_path: Path) -> None:
    """Asked for containers where no Docker engine answers, the run fails: no local fallback, no skip."""
    environ = {"STREAMPROC_TEST_SERVERS": "containers", "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    with (
        pytest.raises(ServersError, match=r"no Docker engine answers.*no-engine\.sock"),
        session_servers(environ),
    ):
        pass


def test_auto_without_an_engine_starts_local_servers_that_answer(tmp_path: Path) -> None:
    """With no engine answering, auto mode gives local throwaway servers, stopped afterwards."""
    environ = {"STREAMPROC_TEST_SERVERS": "auto", "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    with session_servers(environ) as (redis_url, database_url, local):
        assert local is not None
        client = redis.Redis.from_url(redis_url)
        assert client.ping()
        client.close()
        with psycopg.connect(database_url) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()


@pytest.mark.parametrize(("worker", "count"), [("gw0", "2"), ("gw1", "2"), ("gw2", "3")])
def test_each_parallel_worker_picks_ports_from_its_own_share(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    """Under pytest-xdist, worker gw<i> of n only picks free ports of share i (whatever parity the
    kernel prefers), with a cluster node's bus port (port + 10000) in the same share: two workers
    never choose the same port for servers they start at the same time."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    index, n = int(worker[2:]), int(count)
    ports = [free_port() for _ in range(40)]
    assert {port_share(p, n) for p in ports} == {index}
    assert {port_share(p + 10_000, n) for p in ports} == {index}
    assert {port_share(p, n) for p in range(30_000, 30_000 + 4 * n)} == set(range(n))


def test_outside_parallel_workers_any_free_port_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serial run (no PYTEST_XDIST_WORKER) takes the kernel's free ports of both shares."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert {port_share(free_port(), 2) for _ in range(200)} == {0, 1}
