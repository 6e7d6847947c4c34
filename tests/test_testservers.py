"""Choosing the suite's servers: STREAMPROC_TEST_SERVERS is obeyed, and never quietly."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import redis

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
