"""Throwaway local Redis and Postgres servers on free loopback ports.

Used by ``streamproc demo`` (when no URLs are configured), the benchmark and
the test suite. Each server lives in its own temporary directory and is gone
after ``stop()``. Postgres refuses to run as root, so when we are root the
Postgres commands run as the ``postgres`` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamproc.errors import StreamprocError

INSTALL_HINT = (
    "install it with `sudo apt-get install -y redis-server postgresql` on Debian/Ubuntu"
    " (or your platform's redis and postgresql server packages), or point"
    " STREAMPROC_REDIS_URL / STREAMPROC_DATABASE_URL at running servers"
)


class ServerError(StreamprocError):
    pass


def free_port() -> int:
    """A loopback TCP port that nothing listens on at the moment of asking.

    Under pytest-xdist (``PYTEST_XDIST_WORKER=gw<i>``, ``PYTEST_XDIST_WORKER_COUNT=<n>``) worker
    ``i`` only gets ports of its own share, ``port_share(port, n) == i``: two workers never pick
    the same port between choosing it and their server binding it. Raises ServerError if no port
    of the share turns up (the port range is nearly full).
    """
    index, count = _worker_share()
    for _ in range(_PICKS_PER_SHARE * count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port_share(port, count) == index:
            return port
    raise ServerError(f"no free loopback port of share {index} of {count}")


# Tries per worker before giving up: the kernel hands out ports at random, so a share of 1/n of
# the range turns up within n tries on average.
_PICKS_PER_SHARE = 500


def port_share(port: int, count: int) -> int:
    """Which of ``count`` shares ``port`` is in (0 .. count-1). A port and ``port + 10000`` (a
    Redis Cluster node's bus port) share a share; so do odd and even neighbours, as the kernel
    prefers one parity for ports bound to port 0."""
    return (port % 10_000) // 2 % count


def _worker_share() -> tuple[int, int]:
    """(this pytest-xdist worker's index, the number of workers), or (0, 1) outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return 0, 1
    return int(worker[2:]) % int(count), int(count)


def _which(name: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_pg_version)
    if candidates:
        return candidates[-1]
    raise ServerError(f"`{name}` not found: {INSTALL_HINT}")


def pg_tool(name: str) -> str:
    """The path of a server binary (``pg_waldump``, ``redis-server``...): on PATH, else the
    newest under ``/usr/lib/postgresql``. Raises :class:`ServerError` when there is none."""
    return _which(name)


def _pg_version(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError("running as root needs a `postgres` system user for Postgres") from None
    return [_which("runuser"), "-u", "postgres", "--"]


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    args: Sequence[str] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


def start_redis(directory: Path | None = None, port: int | None = None, extra: Sequence[str] = ()) -> RedisServer:
    binary = _which("redis-server")
    directory = directory or Path(tempfile.mkdtemp(prefix="streamproc-redis-"))
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
        *extra,
    ]
    with open(directory / "redis.log", "ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = RedisServer(port, directory, proc, tuple(extra))
    _wait_for_port(port, proc, directory / "redis.log")
    return server


@dataclass
class PostgresServer:
    port: int
    directory: Path
    user: str = "streamproc"
    database: str = "streamproc"
    _prefix: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._prefix, _which("pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self.pg_ctl("-l", str(self.directory / "postgres.log"), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(directory: Path | None = None, port: int | None = None, durable: bool = False) -> PostgresServer:
    prefix = _as_postgres_user()
    directory = directory or Path(tempfile.mkdtemp(prefix="streamproc-pg-"))
    directory.mkdir(parents=True, exist_ok=True)
    if prefix:
        shutil.chown(directory, "postgres", "postgres")
    server = PostgresServer(port or free_port(), directory, _prefix=prefix)
    init = subprocess.run(
        [
            *prefix,
            _which("initdb"),
            "-D",
            str(server.data),
            "-U",
            server.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        raise ServerError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    conf = [
        "max_connections = 100",
        "shared_buffers = 128MB",
        "log_min_messages = warning",
        "max_locks_per_transaction = 256",
    ]
    if not durable:
        conf += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    with open(server.data / "postgresql.conf", "a") as fh:
        fh.write("\n".join(conf) + "\n")
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        raise ServerError(f"Postgres did not start: {exc.stderr.strip()} (log: {directory}/postgres.log)") from exc
    import psycopg

    with psycopg.connect(f"postgresql://{server.user}@127.0.0.1:{server.port}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{server.database}"')
    return server


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], logfile: Path, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"server exited at start: {logfile.read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"server on port {port} did not come up within {timeout_s:g} s")


@dataclass
class LocalServers:
    redis: RedisServer
    postgres: PostgresServer

    def stop(self) -> None:
        self.redis.stop()
        shutil.rmtree(self.redis.directory, ignore_errors=True)
        self.postgres.destroy()


@contextmanager
def local_servers(durable: bool = False) -> Iterator[LocalServers]:
    """Throwaway Redis and Postgres; ``durable`` keeps Postgres's default fsync,
    synchronous_commit and full_page_writes (else all three are off)."""
    redis_server = start_redis()
    try:
        pg = start_postgres(durable=durable)
    except BaseException:
        redis_server.stop()
        raise
    servers = LocalServers(redis_server, pg)
    try:
        yield servers
    finally:
        servers.stop()


@dataclass
class RedisCluster:
    """A throwaway Redis Cluster: ``primaries`` primaries, each with ``replicas`` replicas."""

    nodes: list[RedisServer]
    directory: Path

    @property
    def url(self) -> str:
        """A seed node; the cluster client discovers the others."""
        return self.nodes[0].url.removesuffix("/0")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis_cluster(primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1500) -> RedisCluster:
    """Start ``primaries * (1 + replicas)`` nodes and join them with ``redis-cli --cluster create``."""
    directory = Path(tempfile.mkdtemp(prefix="streamproc-cluster-"))
    nodes: list[RedisServer] = []
    cluster = RedisCluster(nodes, directory)
    try:
        for i in range(primaries * (1 + replicas)):
            extra = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(node_timeout_ms),
                "--appendonly",
                "yes",
                "--appendfsync",
                "no",
            )
            nodes.append(start_redis(directory / f"node{i}", port=_free_cluster_port(), extra=extra))
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        create = subprocess.run(
            [
                _which("redis-cli"),
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if create.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed: {create.stdout[-500:]} {create.stderr[-500:]}")
        _wait_cluster_ok(nodes)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise ServerError("no free pair of loopback ports (port, port + 10000) for a cluster node")


def _ask(node: RedisServer, *command: str) -> str:
    """``redis-cli -p <port> <command>`` on a node: its reply as text."""
    cli = [_which("redis-cli"), "-p", str(node.port), *command]
    return subprocess.run(cli, capture_output=True, text=True, timeout=10).stdout


def _cluster_ready(nodes: Sequence[RedisServer]) -> bool:
    """Every running node sees the cluster ok, and every replica has finished its first sync."""
    running = [n for n in nodes if n.process.poll() is None]
    if not all("cluster_state:ok" in _ask(n, "cluster", "info") for n in running):
        return False
    return all(
        "role:slave" not in info or "master_link_status:up" in info
        for info in (_ask(n, "info", "replication") for n in running)
    )


def _wait_cluster_ok(nodes: Sequence[RedisServer], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _cluster_ready(nodes):
            return
        time.sleep(0.1)
    raise ServerError(f"the cluster did not reach cluster_state:ok within {timeout_s:g} s")
