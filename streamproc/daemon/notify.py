"""systemd's sd_notify protocol, spoken directly (no libsystemd needed).

Inert when ``$NOTIFY_SOCKET`` is unset. ``WATCHDOG=1`` is sent from the main
loop at most every half ``$WATCHDOG_USEC``, so a hung loop misses its pings and
systemd restarts the service.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

from streamproc.daemon.health import Health


class Notifier:
    """Tells systemd (and, given a :class:`Health`, the HTTP probes) how the daemon is doing."""

    def __init__(self, environ: Mapping[str, str] = os.environ, health: Health | None = None) -> None:
        self.health = health
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address
        self._sock: socket.socket | None = None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        watchdog = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self._watchdog_every_s = int(usec) / 2e6 if watchdog else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        if not self._address:
            return
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(OSError):  # systemd gone or socket not ours: never fatal
            self._sock.sendto("\n".join(lines).encode(), self._address)

    def ready(self, status: str) -> None:
        if self.health is not None:
            self.health.started = True
            self.health.turned()  # start-up is done: the loop's first turn follows, liveness counts from here
        self.send("READY=1", f"STATUS={status}")

    def retrying(self, server: str, error: str) -> None:
        """The loop waits for ``server`` (``redis``/``postgres``): not ready until :meth:`answered`."""
        if self.health is not None:
            self.health.retrying[server] = error

    def answered(self, server: str) -> None:
        if self.health is not None and server in self.health.retrying:
            del self.health.retrying[server]

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping: finishing the batch in hand") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        """Ping the watchdog if due; cheap enough to call every loop iteration."""
        if self.health is not None:
            self.health.turned()
        if self._watchdog_every_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self._watchdog_every_s:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
