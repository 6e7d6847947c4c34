"""A small threaded TCP proxy on loopback, for fault tests.

One accept thread plus two pump threads per connection. All sockets are
non-blocking and every wait is a ``select`` with a short timeout, so a closed
link's threads notice it within ~0.1 s and ``close()`` can join them all.

Faults it can inject:

- ``cut()``: reset every open connection (RST, via ``SO_LINGER`` 0);
- ``blackhole()``: keep accepting and keep connections open but stop
  forwarding (bytes wait in the kernel buffers, as in a network partition);
  ``restore()`` resumes;
- ``latency_s``: sleep before forwarding each chunk;
- ``switch_target()``: new connections go to another server (failover);
- ``reset_on_commit("before" | "after")``, Postgres only: the next time a
  client sends a COMMIT (simple ``Query`` or extended ``Parse`` message), reset
  the client connection either before forwarding it (the commit does not land)
  or after forwarding it and receiving the server's reply, which is dropped
  (the commit landed, its acknowledgement is lost).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import Literal

Mode = Literal["before", "after"]

_TICK_S = 0.1
_CHUNK = 65536
# Startup-phase packets (no type byte) that are answered before the StartupMessage.
_PG_NEGOTIATION_CODES = (80877103, 80877104)  # SSLRequest, GSSENCRequest


def _is_commit(msg_type: bytes, body: bytes) -> bool:
    if msg_type == b"Q":
        query = body
    elif msg_type == b"P":  # Parse: statement name \0 query \0 ...
        query = body.split(b"\0", 1)[1] if b"\0" in body else b""
    else:
        return False
    return query.lstrip().upper().startswith(b"COMMIT")


class _PgClientParser:
    """Splits the client->server byte stream into whole Postgres messages."""

    def __init__(self) -> None:
        self._buf = b""
        self._startup = True

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Complete messages (raw bytes, is-COMMIT); an incomplete tail is kept."""
        self._buf += data
        out: list[tuple[bytes, bool]] = []
        while True:
            if self._startup:
                if len(self._buf) < 8:
                    break
                (length,) = struct.unpack("!I", self._buf[:4])
                if len(self._buf) < length:
                    break
                (code,) = struct.unpack("!I", self._buf[4:8])
                out.append((self._buf[:length], False))
                self._buf = self._buf[length:]
                if code not in _PG_NEGOTIATION_CODES:
                    self._startup = False
            else:
                if len(self._buf) < 5:
                    break
                (length,) = struct.unpack("!I", self._buf[1:5])
                if len(self._buf) < 1 + length:
                    break
                msg = self._buf[: 1 + length]
                self._buf = self._buf[1 + length :]
                out.append((msg, _is_commit(msg[:1], msg[5:])))
        return out


class _Link:
    """One proxied connection: client socket, server socket, two pumps."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.closed = False
        self.kill_on_reply = False
        self._lock = threading.Lock()
        self._parser = _PgClientParser() if proxy.postgres else None
        self.threads = [
            threading.Thread(target=self._pump, args=(client, server, True), name="proxy-c2s", daemon=True),
            threading.Thread(target=self._pump, args=(server, client, False), name="proxy-s2c", daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self, reset: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for sock in (self.client, self.server):
                if reset:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        self.proxy._forget(self)

    def _pump(self, src: socket.socket, dst: socket.socket, to_server: bool) -> None:
        try:
            while not self.closed:
                if not self.proxy._flowing.is_set():
                    self.proxy._flowing.wait(_TICK_S)
                    continue
                readable, _, _ = select.select([src], [], [], _TICK_S)
                if not readable or self.closed or not self.proxy._flowing.is_set():
                    continue
                data = src.recv(_CHUNK)
                if not data:
                    self.close()
                    return
                if self.proxy.latency_s:
                    time.sleep(self.proxy.latency_s)
                if to_server and self._parser is not None:
                    if not self._forward_client_messages(data):
                        return
                    continue
                if not to_server and self.kill_on_reply:
                    self.proxy._fired("after")
                    self.close(reset=True)  # the COMMIT's reply is dropped
                    return
                self._send(dst, data)
        except (OSError, ValueError):  # the other pump or the test closed the link
            self.close()

    def _forward_client_messages(self, data: bytes) -> bool:
        assert self._parser is not None
        out = b""
        for raw, is_commit in self._parser.feed(data):
            mode = self.proxy._take_trap() if is_commit else None
            if mode == "before":
                self._send(self.server, out)
                self.proxy._fired("before")
                self.close(reset=True)  # COMMIT never reaches the server
                return False
            out += raw
            if mode == "after":
                self.kill_on_reply = True
                self._send(self.server, out)
                out = b""
        self._send(self.server, out)
        return True

    def _send(self, dst: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            _, writable, _ = select.select([], [dst], [], _TICK_S)
            if writable:
                try:
                    n = dst.send(view)
                except BlockingIOError:
                    continue
                view = view[n:]


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; see the module docstring for faults."""

    def __init__(self, target: tuple[str, int], postgres: bool = False) -> None:
        self.target = target
        self.postgres = postgres
        self.latency_s = 0.0
        self.fired: dict[str, int] = {"before": 0, "after": 0}
        self.accepted = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._trap: Mode | None = None
        self._lock = threading.Lock()
        self._trap_fired = threading.Condition(self._lock)
        self._links: set[_Link] = set()
        self._all_links: list[_Link] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._acceptor.start()
        return self

    def close(self) -> None:
        self._stopping.set()
        self._flowing.set()
        if self._acceptor.is_alive():
            self._acceptor.join()
        self._listener.close()
        self.cut()
        for link in list(self._all_links):
            for t in link.threads:
                if t.is_alive():
                    t.join()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------

    def cut(self) -> int:
        """Reset every open connection; returns how many."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close(reset=True)
        return len(links)

    def blackhole(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._flowing.set()

    def switch_target(self, target: tuple[str, int]) -> None:
        self.target = target

    def reset_on_commit(self, mode: Mode) -> None:
        """Arm a one-shot trap for the next COMMIT any client sends."""
        with self._lock:
            self._trap = mode

    def wait_fired(self, mode: Mode, count: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._trap_fired:
            while self.fired[mode] < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._trap_fired.wait(left)
        return True

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    # -- internals ---------------------------------------------------------------

    def _take_trap(self) -> Mode | None:
        with self._lock:
            mode, self._trap = self._trap, None
            return mode

    def _fired(self, mode: Mode) -> None:
        with self._trap_fired:
            self.fired[mode] += 1
            self._trap_fired.notify_all()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], _TICK_S)
            if not readable:
                continue
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            for sock in (client, server):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                self._links.add(link)
                self._all_links.append(link)
                self.accepted += 1
            link.start()
