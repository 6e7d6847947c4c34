"""Where the suite's Redis and Postgres come from: containers or local throwaway servers.

``STREAMPROC_TEST_SERVERS`` picks the path:

- ``auto`` (default): containers when a Docker engine answers, else local servers;
- ``containers``: testcontainers' ``RedisContainer`` and ``PostgresContainer``; an engine that
  does not answer, or an image that cannot be had, fails the run;
- ``local``: ``redis-server`` and ``initdb`` + ``pg_ctl`` on free loopback ports
  (``streamproc.dev.localservers``).

Images: ``STREAMPROC_TEST_REDIS_IMAGE`` (default ``redis:7``) and
``STREAMPROC_TEST_POSTGRES_IMAGE`` (default ``postgres:16``). The Docker engine is the one
``DOCKER_HOST`` (or the default socket) names.

An engine with no default ``bridge`` network (as the one ``setup.sh test`` starts on a machine
without Docker: ``dockerd --bridge=none``) runs the containers on the host's network, each server
listening on a loopback port chosen here; any other engine publishes the ports as usual.
Every container is removed when the session ends, and that is checked: Ryuk, testcontainers'
reaper, may be disabled (``TESTCONTAINERS_RYUK_DISABLED=true``) where its image cannot be pulled.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any, Final

import docker
import docker.errors
from testcontainers.community.postgres import PostgresContainer
from testcontainers.community.redis import RedisContainer
from testcontainers.core.labels import LABEL_SESSION_ID, SESSION_ID

from streamproc.dev.localservers import LocalServers, free_port, local_servers

MODES: Final = ("auto", "containers", "local")
DEFAULT_REDIS_IMAGE: Final = "redis:7"
DEFAULT_POSTGRES_IMAGE: Final = "postgres:16"
# Throwaway data: no durability needed, as with the local servers.
POSTGRES_FLAGS: Final = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
REDIS_FLAGS: Final = ("--save", "", "--appendonly", "no", "--protected-mode", "no")


class ServersError(Exception):
    """The servers asked for cannot be had: the message names the setting to change."""


def servers_mode(environ: Mapping[str, str]) -> str:
    """``STREAMPROC_TEST_SERVERS``: one of ``MODES``; raises ServersError for anything else."""
    mode = environ.get("STREAMPROC_TEST_SERVERS") or "auto"
    if mode not in MODES:
        raise ServersError(f"STREAMPROC_TEST_SERVERS={mode!r}: expected one of {', '.join(MODES)}")
    return mode


def docker_engine(environ: Mapping[str, str]) -> docker.DockerClient | None:
    """A client of the Docker engine (``DOCKER_HOST`` in environ) that answers a ping, or None."""
    host = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://") and not _accepts(host.removeprefix("unix://")):
        return None  # nothing listens: ask no client, which would leave its socket open
    try:
        client = docker.from_env(environment=dict(environ))
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
    except docker.errors.DockerException:
        client.close()
        return None
    return client


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@contextmanager
def session_servers(environ: Mapping[str, str] = os.environ) -> Iterator[tuple[str, str, LocalServers | None]]:
    """(redis_url, database_url, local servers or None) for the whole session, per the settings above."""
    mode = servers_mode(environ)
    engine = docker_engine(environ) if mode != "local" else None
    if mode == "containers" and engine is None:
        raise ServersError(
            "STREAMPROC_TEST_SERVERS=containers but no Docker engine answers"
            f" (DOCKER_HOST={environ.get('DOCKER_HOST', '<unset: the default socket>')})"
        )
    if engine is None:
        with local_servers() as local:
            yield local.redis.url, local.postgres.url, local
        return
    try:
        with container_servers(engine, environ) as (redis_url, database_url):
            yield redis_url, database_url, None
    finally:
        engine.close()


class _OnHostNetwork:
    """A container sharing the host's network: its server listens on the loopback port it was given."""

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        return port


class HostRedisContainer(_OnHostNetwork, RedisContainer):
    pass


class HostPostgresContainer(_OnHostNetwork, PostgresContainer):
    pass


def redis_container(image: str, host_network: bool) -> RedisContainer:
    if not host_network:
        return RedisContainer(image).with_command(["redis-server", *REDIS_FLAGS])
    port = free_port()
    container = HostRedisContainer(image, port=port).with_kwargs(network_mode="host")
    container.ports.clear()  # nothing to publish on the host's own network
    return container.with_command(["redis-server", "--port", str(port), "--bind", "127.0.0.1", *REDIS_FLAGS])


def postgres_container(image: str, host_network: bool) -> PostgresContainer:
    credentials: dict[str, Any] = {"username": "streamproc", "password": "streamproc", "dbname": "streamproc"}
    if not host_network:
        return PostgresContainer(image, driver=None, **credentials).with_command(["postgres", *POSTGRES_FLAGS])
    port = free_port()
    container = HostPostgresContainer(image, port=port, driver=None, **credentials).with_kwargs(network_mode="host")
    container.ports.clear()
    # PGPORT moves both the server and the readiness probe's psql to the chosen port.
    container.with_env("PGPORT", str(port))
    return container.with_command(["postgres", "-c", "listen_addresses=127.0.0.1", *POSTGRES_FLAGS])


@contextmanager
def container_servers(engine: docker.DockerClient, environ: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """Start Redis and Postgres containers; stop them after, and fail if any container is left."""
    redis_image = environ.get("STREAMPROC_TEST_REDIS_IMAGE") or DEFAULT_REDIS_IMAGE
    postgres_image = environ.get("STREAMPROC_TEST_POSTGRES_IMAGE") or DEFAULT_POSTGRES_IMAGE
    host_network = not engine.networks.list(names=["bridge"])
    try:
        with ExitStack() as stack:
            r = stack.enter_context(redis_container(redis_image, host_network))
            pg = stack.enter_context(postgres_container(postgres_image, host_network))
            host, port = r.get_container_host_ip(), r.get_exposed_port(r.port)
            yield f"redis://{host}:{port}/0", pg.get_connection_url()
    finally:
        left = engine.containers.list(all=True, filters={"label": f"{LABEL_SESSION_ID}={SESSION_ID}"})
        if left:
            raise ServersError(f"containers left after the session: {', '.join(c.name for c in left)}")
