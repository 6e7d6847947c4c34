"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz`` (liveness), ``/ready`` (readiness).

- ``/healthz``: 200 while the main loop has turned within ``liveness_timeout_s``
  (it turns at least once per ``block_ms``, and once per backoff while a server
  is away); 503 once it has not — a hung loop, which only a restart cures.
- ``/ready``: 200 once start-up is done and while Redis and Postgres answer
  (probed every ``metrics_interval_s`` by threads of their own), the group
  exists on every stream, and the loop is not retrying a server; else 503 with
  the reasons, one per line. Not ready is not dead: do not restart on it.
- ``/metrics``: Prometheus text. Any other path: 404.

Probes read state that other threads write as plain attributes (one writer each).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import psycopg
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = structlog.get_logger("streamproc.health")

PROBE_TIMEOUT_S: Final = 5


class Health:
    """What the loop, the retry policy and the probe threads last saw."""

    def __init__(self, liveness_timeout_s: float) -> None:
        self.liveness_timeout_s = liveness_timeout_s
        self.last_turn = time.monotonic()
        self.started = False
        self.retrying: dict[str, str] = {}  # server -> last error, while the loop retries it
        self.redis_problem: str | None = "not probed yet"
        self.postgres_problem: str | None = "not probed yet"

    def turned(self) -> None:
        self.last_turn = time.monotonic()

    def live(self) -> tuple[bool, str]:
        idle_s = time.monotonic() - self.last_turn
        if idle_s > self.liveness_timeout_s:
            return False, f"the main loop has not turned for {idle_s:.0f} s (limit {self.liveness_timeout_s:g} s)"
        return True, "ok"

    def ready(self) -> tuple[bool, list[str]]:
        reasons = [] if self.started else ["starting"]
        reasons += [f"retrying {server}: {error}" for server, error in sorted(self.retrying.items())]
        reasons += [f"redis: {p}" for p in [self.redis_problem] if p]
        reasons += [f"postgres: {p}" for p in [self.postgres_problem] if p]
        return not reasons, reasons or ["ok"]


def redis_problem(group_missing: Sequence[str] | None, error: str | None) -> str | None:
    """The readiness line of one group-state refresh: unreachable, or streams lacking the group."""
    if error is not None:
        return f"unreachable ({error})"
    if group_missing:
        return f"group missing on {', '.join(group_missing)}"
    return None


class PostgresProbe(threading.Thread):
    """``SELECT 1`` every ``interval_s`` on a connection of its own, reopened after a failure."""

    def __init__(self, health: Health, database_url: str, interval_s: float) -> None:
        super().__init__(name="streamproc-postgres-probe", daemon=True)
        self.health, self.database_url, self.interval_s = health, database_url, interval_s
        self._stop_event = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def probe_once(self) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.database_url,
                    connect_timeout=PROBE_TIMEOUT_S,
                    autocommit=True,
                    application_name="streamproc-probe",
                )
            self._conn.execute("SELECT 1")
            self.health.postgres_problem = None
        except psycopg.Error as exc:
            self.health.postgres_problem = f"unreachable ({type(exc).__name__})"
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.probe_once()
            self._stop_event.wait(self.interval_s)
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()

    def stop(self) -> None:
        self._stop_event.set()


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = health.live()
                self._send(200 if ok else 503, (why + "\n").encode())
            elif path == "/ready":
                ok, reasons = health.ready()
                self._send(200 if ok else 503, ("\n".join(reasons) + "\n").encode())
            else:
                self._send(404, b"not found: /metrics, /healthz or /ready\n")

        def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # the http.server API
            """Silence the per-request stderr line: scrapes every few seconds would flood the journal."""

    return Handler


def serve_http(addr: str, port: int, health: Health) -> ThreadingHTTPServer:
    """Listen on ``addr:port`` in a daemon thread. Raises OSError when it cannot bind."""
    server = ThreadingHTTPServer((addr, port), _handler(health))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="streamproc-http", daemon=True).start()
    return server
