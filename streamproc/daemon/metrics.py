"""Every Prometheus metric of the daemon, defined in one place.

Names follow Prometheus conventions: ``_total`` counters, base units
(``_seconds``), low-cardinality labels only (stream, group, outcome, server).
Group-state gauges (lag, pending, oldest pending age, DLQ length) are refreshed
from Redis on a timer by :class:`GroupStateRefresher`, in its own thread with
its own connection, so a stalled main loop still reports growing lag.
"""

from __future__ import annotations

import errno
import platform
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog
from prometheus_client import Counter, Gauge, Histogram, Info

from streamproc import __version__
from streamproc.daemon.health import Health, redis_problem, serve_http
from streamproc.errors import ConfigError
from streamproc.redis.client import Client

log = structlog.get_logger("streamproc.metrics")

OUTCOMES: Final = ("ok", "dead_lettered", "duplicate_skipped")

EVENTS = Counter("streamproc_events_total", "Stream entries processed, by outcome.", ["stream", "outcome"])
BATCHES = Counter("streamproc_batches_total", "Batches processed and acknowledged.")
BATCH_ENTRIES = Histogram(
    "streamproc_batch_entries",
    "Entries per batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
FLUSH_SECONDS = Histogram(
    "streamproc_flush_duration_seconds",
    "Time to apply a batch in Postgres, COMMIT included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG = Gauge(
    "streamproc_consumer_lag", "Entries in the stream not yet delivered to the group.", ["stream", "group"]
)
PENDING = Gauge(
    "streamproc_pending_entries", "Entries delivered to the group but not acknowledged.", ["stream", "group"]
)
OLDEST_PENDING = Gauge(
    "streamproc_oldest_pending_age_seconds",
    "Age (from its entry id) of the oldest entry delivered to the group and not yet acknowledged.",
    ["stream", "group"],
)
OLDEST_PENDING_IDLE = Gauge(
    "streamproc_oldest_pending_idle_seconds",
    "Time since the oldest pending entry of the group was last delivered (stuck entries grow it).",
    ["stream", "group"],
)
STREAM_LENGTH = Gauge("streamproc_stream_length", "XLEN of the stream.", ["stream"])
OLDEST_ENTRY_AGE = Gauge(
    "streamproc_stream_oldest_entry_age_seconds",
    "Age (from its id) of the stream's first entry: how far back trimming has left it (0: empty).",
    ["stream"],
)
DLQ_LENGTH = Gauge("streamproc_dlq_length", "XLEN of the stream's dead-letter stream.", ["stream"])
BOT_EVENTS = Counter(
    "streamproc_bot_events_total",
    "Page views and clicks counted in bots_daily instead of as traffic (their user agent is a bot).",
)
DERIVED_SESSIONS = Counter(
    "streamproc_derived_sessions_total",
    "Server-side sessions started (events without a session id), and runs merged by a late event.",
    ["change"],
)
RECLAIMED = Counter(
    "streamproc_reclaimed_entries_total",
    "Entries taken over with XAUTOCLAIM: idle longer than min_idle_ms on a dead or stalled consumer,"
    " or on this one when their delivery or ack was lost.",
    ["stream"],
)
REFRESHED = Counter(
    "streamproc_refreshed_entries_total",
    "Entries of batches in hand longer than a quarter of min_idle_ms (a slow commit, a Postgres outage)"
    " whose idle time was reset with XCLAIM JUSTID, so no XAUTOCLAIM takes them back.",
)
TRIMMED = Counter(
    "streamproc_trimmed_entries_total",
    "Entries deleted from the stream before they were processed: pending ones (XAUTOCLAIM's deleted"
    " ids, or empty on a pending re-read), and undelivered ones a read skipped.",
    ["stream"],
)
LAST_COMMIT = Gauge("streamproc_last_commit_timestamp_seconds", "Unix time of the last successful batch COMMIT.")
RECONNECTS = Counter(
    "streamproc_reconnects_total", "Failed attempts to reach a server (each followed by a backoff).", ["server"]
)
KEY_OVERFLOW = Counter(
    "streamproc_key_overflow_events_total",
    "Events whose path, route, selector, name or dimension value went to '(other)': over the per-batch cap.",
)
POSTGRES_REJECTED = Counter(
    "streamproc_postgres_rejected_total",
    "Entries Postgres refused as data (a numeric overflow, a counter past its range, a row no"
    " partition takes), isolated from their batch and dead-lettered with its message.",
    ["stream"],
)
TRANSACTION_RETRIES = Counter(
    "streamproc_transaction_retries_total",
    "Batch transactions aborted by Postgres (lock timeout, deadlock, serialization) and retried.",
)
GROUP_STATE_ERRORS = Counter("streamproc_group_state_errors_total", "Failed refreshes of the group-state gauges.")
BUILD = Info("streamproc_build", "streamproc version and runtime.")


def init(streams: Sequence[str], group: str) -> None:
    """Create every labelled series at zero so dashboards and alerts see them at once."""
    BUILD.info({"version": __version__, "python": platform.python_version()})
    for stream in streams:
        for outcome in OUTCOMES:
            EVENTS.labels(stream, outcome)
        RECLAIMED.labels(stream)
        TRIMMED.labels(stream)
        POSTGRES_REJECTED.labels(stream)
    for server in ("redis", "postgres"):
        RECONNECTS.labels(server)


def serve(port: int, addr: str, health: Health) -> None:
    """Serve ``/metrics``, ``/healthz`` and ``/ready`` on ``addr:port`` (port 0 disables);
    see :mod:`streamproc.daemon.health`. Raises ConfigError when it cannot listen."""
    if port:
        try:
            serve_http(addr, port, health)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"cannot serve metrics on {addr}:{port} ({exc.strerror}); set STREAMPROC_METRICS_PORT"
                    " to a free port (each instance on a host needs its own) or 0 to disable"
                ) from None
            raise ConfigError(
                f"cannot serve metrics on {addr}:{port} ({exc.strerror}); set STREAMPROC_METRICS_ADDR to an"
                " address of this host (127.0.0.1: this host only; 0.0.0.0: every interface)"
            ) from None
        log.info("metrics listening", addr=addr, port=port)


class GroupStateRefresher:
    """Refresh lag / pending / oldest-pending / DLQ gauges every ``interval_s``."""

    def __init__(
        self,
        make_client: Callable[[], Client],
        streams: Sequence[str],
        group: str,
        interval_s: float,
        health: Health | None = None,
    ) -> None:
        self._health = health
        self._make_client = make_client
        self._streams = list(streams)
        self._group = group
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-state", daemon=True)
        self.last_state: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        client: Client | None = None
        try:
            while not self._stop.is_set():
                try:
                    if client is None:  # a cluster client connects when made: retried here too
                        client = self._make_client()
                    self.refresh(client)
                    missing = [s for s, state in self.last_state.items() if not state["group_exists"]]
                    if self._health is not None:
                        self._health.redis_problem = redis_problem(missing, None)
                except Exception as exc:  # never let the thread die: frozen gauges would lie
                    if self._health is not None:
                        self._health.redis_problem = redis_problem(None, f"{type(exc).__name__}: {exc}")
                    GROUP_STATE_ERRORS.inc()
                    log.warning("group state refresh failed", error=str(exc), kind=type(exc).__name__)
                self._stop.wait(self._interval_s)
        finally:
            if client is not None:
                client.close()

    def refresh(self, client: Client) -> None:
        from streamproc.redis.groupstate import read_group_state

        for stream in self._streams:
            state = read_group_state(client, stream, self._group)
            self.last_state[stream] = state
            STREAM_LENGTH.labels(stream).set(state["length"])
            first_ms = int(state["first_id"].partition("-")[0]) if state["first_id"] else None
            OLDEST_ENTRY_AGE.labels(stream).set(0 if first_ms is None else max(0.0, time.time() - first_ms / 1000))
            DLQ_LENGTH.labels(stream).set(state["dlq_length"])
            if state["lag"] is not None:
                CONSUMER_LAG.labels(stream, self._group).set(state["lag"])
            PENDING.labels(stream, self._group).set(state["pending"])
            OLDEST_PENDING.labels(stream, self._group).set(state["oldest_pending_age_ms"] / 1000)
            OLDEST_PENDING_IDLE.labels(stream, self._group).set(state["oldest_pending_idle_ms"] / 1000)


def observe_batch(entries: int, flush_s: float | None) -> None:
    """A batch acknowledged; ``flush_s`` is None when it needed no transaction
    (only dead letters or trimmed entries)."""
    BATCHES.inc()
    BATCH_ENTRIES.observe(entries)
    if flush_s is not None:
        FLUSH_SECONDS.observe(flush_s)
        LAST_COMMIT.set(time.time())
