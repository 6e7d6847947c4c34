"""The dead-letter transaction when the reply to its EXEC is lost: still one letter per entry.

A real single-node Redis Cluster behind a real TCP proxy that, the first time a client sends
EXEC, lets the transaction run on the server and then cuts the connection before the reply
comes back. The cluster client (redis-py's ClusterPipeline) answered that by sending the whole
MULTI ... EXEC again on a new connection, without the WATCH: the letters were written twice.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from streamproc.dev.localservers import RedisServer, _free_cluster_port, start_redis
from streamproc.redis.deadletters import dlq_ids_key, dlq_key, write_dead_letters
from tests.conftest import wait_for


class CutAfterExec:
    """A TCP proxy to 127.0.0.1:``upstream``. The first client data holding ``EXEC`` is passed
    on; once ``applied()`` says the server ran it, that connection is closed with the reply
    unsent. Every other byte is passed through."""

    def __init__(self, upstream: int, applied: Callable[[], bool]) -> None:
        self.upstream = upstream
        self.applied = applied
        self.armed = True
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, server]
            cut = threading.Event()
            for target, args in ((self._up, (client, server, cut)), (self._down, (server, client, cut))):
                thread = threading.Thread(target=target, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _up(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    trigger = self.armed and b"EXEC\r\n" in data.upper()
                    if trigger:
                        self.armed = False
                if trigger:
                    cut.set()  # nothing more goes back to this client
                server.sendall(data)
                if trigger:
                    wait_for(self.applied, 10, "the transaction to run on the server")
                    self.cuts += 1
                    return
        except OSError:
            pass
        finally:
            _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        try:
            while data := server.recv(65536):
                if cut.is_set():
                    continue
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(server, client)

    def close(self) -> None:
        _close(self.listener)  # shutdown wakes the accept()
        _close(*self._sockets)
        for thread in self._threads:
            thread.join(10)


def _close(*sockets: socket.socket) -> None:
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@pytest.fixture
def one_node_cluster(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis Cluster of one primary holding every slot."""
    node = start_redis(
        tmp_path / "node",
        port=_free_cluster_port(),
        extra=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
    )
    try:
        subprocess.run(
            ["redis-cli", "-p", str(node.port), "cluster", "addslotsrange", "0", "16383"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        direct = redis.Redis(port=node.port)
        wait_for(lambda: b"cluster_state:ok" in direct.execute_command("CLUSTER", "INFO"), 30, "cluster_state:ok")
        direct.close()
        yield node
    finally:
        node.stop()


def test_lost_exec_reply_on_a_cluster_writes_one_dead_letter(one_node_cluster: RedisServer) -> None:
    """The connection is cut right after the dead-letter transaction ran on the server, before
    its reply arrives: the entry has one dead letter and one mark, and is acked."""
    direct = redis.Redis(port=one_node_cluster.port)
    stream, group = "{t}:events", "g"
    direct.xgroup_create(stream, group, id="0", mkstream=True)
    eid = direct.xadd(stream, {"data": "not json"})
    direct.xreadgroup(group, "c1", {stream: ">"})
    proxy = CutAfterExec(one_node_cluster.port, lambda: direct.xlen(dlq_key(stream)) >= 1)
    # Everything the cluster client learns about the node (CLUSTER SLOTS) points at the proxy.
    direct.config_set("cluster-announce-port", proxy.port)
    client = RedisCluster(host="127.0.0.1", port=proxy.port, socket_timeout=5)
    try:
        for _ in range(20):  # what the daemon's retry does with a failed acknowledgement
            try:
                write_dead_letters(client, stream, group, "c1", [(eid, {b"data": b"not json"}, "invalid json")])
                break
            except (redis.ConnectionError, redis.TimeoutError, redis.WatchError):
                time.sleep(0.05)
        assert proxy.cuts == 1
        letters = direct.xrange(dlq_key(stream))
        assert [f[b"_dlq_id"] for _, f in letters] == [eid], letters
        assert direct.hkeys(dlq_ids_key(stream)) == [eid]
        assert direct.xpending(stream, group)["pending"] == 0
    finally:
        client.close()
        proxy.close()
        direct.close()
