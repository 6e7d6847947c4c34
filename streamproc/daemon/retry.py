"""The retry policy of the loop: a transient server failure is waited out in process, with backoff.

Entries stay pending in Redis while a call is retried. Once a stop is
requested a call that nothing in hand depends on gives up at once (its
``on_stop``); the others keep trying until the drain deadline, then raise
:class:`~streamproc.errors.ShutdownTimeout`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

import structlog

from streamproc.daemon import metrics
from streamproc.daemon.backoff import Backoff
from streamproc.daemon.notify import Notifier
from streamproc.errors import ShutdownTimeout, SinkUnavailable, SourceUnavailable, TransactionAborted
from streamproc.redis.source import Batch

log = structlog.get_logger("streamproc")
T = TypeVar("T")
Server = Literal["redis", "postgres"]


class Retrier:
    """Calls retried until their server answers, bounded by the drain deadline once stopping.

    ``deadline`` (a ``time.monotonic()`` value, None until a stop is requested)
    is set by the worker's stop, which may run in a signal handler: plain
    attribute writes only.
    """

    def __init__(self, stopping: threading.Event, drain_timeout_s: float, notifier: Notifier) -> None:
        self.stopping = stopping
        self.drain_timeout_s = drain_timeout_s
        self.notifier = notifier
        self.deadline: float | None = None

    def call(self, call: Callable[[], T], server: Server, step: str, on_stop: Callable[[], T] | None = None) -> T:
        """Call until the server answers, backing off. Once stopping: ``on_stop()`` if given
        (nothing in hand depends on this call), else retried until the drain deadline."""
        unavailable = SourceUnavailable if server == "redis" else SinkUnavailable
        backoff = Backoff()
        while True:
            try:
                result = call()
            except unavailable as exc:
                if on_stop is not None and self.stopping.is_set():
                    return on_stop()
                self.check_deadline(step, exc)
                self.notifier.retrying(server, str(exc))
                metrics.RECONNECTS.labels(server).inc()
                self.notifier.watchdog()
                delay = backoff.wait()
                log.warning(f"{server} unavailable, retrying", step=step, error=str(exc), retry_in_s=round(delay, 2))
            else:
                self.notifier.answered(server)
                return result

    def read(self, call: Callable[[], T], on_stop: Callable[[], T] = Batch) -> T:  # type: ignore[assignment]
        """A read waits for Redis only until a stop is requested: then it comes back empty
        (``on_stop``), since a read that never happened leaves nothing to finish."""
        return self.call(call, "redis", "read", on_stop=on_stop)

    def commit(self, call: Callable[[], T]) -> T:
        """A Postgres transaction, run again from the start until it commits (the batch in hand
        depends on it: retried until the drain deadline even when stopping)."""
        backoff = Backoff()
        while True:
            try:
                result = call()
            except SinkUnavailable as exc:
                self.check_deadline("flush", exc)
                self.notifier.retrying("postgres", str(exc))
                if isinstance(exc, TransactionAborted):
                    metrics.TRANSACTION_RETRIES.inc()
                else:
                    metrics.RECONNECTS.labels("postgres").inc()
                self.notifier.watchdog()
                self.notifier.status(f"Postgres unavailable, retrying: {exc}")
                delay = backoff.wait()
                log.warning("flush failed, retrying", error=str(exc), retry_in_s=round(delay, 2))
            else:
                self.notifier.answered("postgres")
                return result

    def check_deadline(self, step: str, exc: Exception) -> None:
        """Raise :class:`ShutdownTimeout` (from ``exc``) once the drain deadline has passed."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ShutdownTimeout(
                f"could not finish the {step} of the batch in hand before the drain deadline"
                f" ({self.drain_timeout_s:g} s): {exc}. Its entries stay pending and"
                " will be redelivered; nothing is lost."
            ) from exc
