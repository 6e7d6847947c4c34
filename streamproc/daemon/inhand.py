"""Entries in hand: read by this process and not yet acknowledged, and kept looking alive.

Reclaim skips them, so a batch that waits for Postgres is never handed to this
process twice. And while a batch stays in hand longer than a quarter of
``min_idle_ms`` (a slow commit, a Postgres outage, a drain), :class:`Refresher`
resets its entries' idle time in Redis (``XCLAIM … 0 … JUSTID``: no delivery
counted), so no worker's ``XAUTOCLAIM``, this one's or another's, takes a live
batch back. It runs in its own thread because the thread holding the batch
may be blocked inside a Postgres call for as long as the commit stalls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import structlog

from streamproc.daemon import metrics
from streamproc.errors import StreamprocError
from streamproc.redis.source import Batch

log = structlog.get_logger("streamproc")

# A batch in hand is refreshed once it has looked idle for this share of min_idle_ms; the
# refresher wakes as often, so an entry's idle time stays below half of min_idle_ms while
# Redis answers, and one failed refresh still leaves a quarter of it as margin.
REFRESH_FRACTION: Final = 0.25

Held = dict[str, list[bytes]]  # stream -> entry ids


@dataclass
class _Entry:
    batch: Batch
    since: float  # monotonic time it was read or last refreshed


class InHand:
    """The batches in hand, thread-safe: added by the reading thread, discarded by the
    flusher that acked them, refreshed by the :class:`Refresher`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._batches: dict[int, _Entry] = {}  # id(batch): the entry keeps the batch alive
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, batch: Batch) -> None:
        with self._lock:
            self._batches[id(batch)] = _Entry(batch, self._clock())

    def discard(self, batch: Batch) -> None:
        with self._lock:
            self._batches.pop(id(batch), None)

    def snapshot(self) -> frozenset[tuple[str, bytes]]:
        """``(stream, entry id)`` of every entry in hand."""
        with self._lock:
            return frozenset(pair for e in self._batches.values() for pair in _ids(e.batch))

    def due(self, after_s: float) -> tuple[list[Batch], Held]:
        """The batches in hand that have looked idle for ``after_s`` seconds or more, and their ids."""
        now = self._clock()
        held: Held = {}
        with self._lock:
            batches = [e.batch for e in self._batches.values() if now - e.since >= after_s]
        for batch in batches:
            for stream, eid in _ids(batch):
                held.setdefault(stream, []).append(eid)
        return batches, held

    def refreshed(self, batches: Sequence[Batch], at: float) -> None:
        """``batches`` had their idle time reset at ``at`` (a clock value taken before the reset)."""
        with self._lock:
            for batch in batches:
                entry = self._batches.get(id(batch))
                if entry is not None:
                    entry.since = at


class Refresher:
    """A thread that keeps the batches in hand from looking idle to ``XAUTOCLAIM``.

    ``refresh(held)`` resets the idle time of ``held`` (stream -> ids) and returns how many
    were reset and how many were no longer pending under this consumer (acked meanwhile, or
    taken over by another consumer while this process could not refresh them: those are
    left to the other consumer, and the ledger counts them once).
    ``min_idle_ms``: the reclaim threshold of the group. Use as a context manager.
    """

    def __init__(
        self,
        in_hand: InHand,
        refresh: Callable[[Mapping[str, Sequence[bytes]]], tuple[int, int]],
        min_idle_ms: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.in_hand = in_hand
        self._refresh = refresh
        self.every_s = min_idle_ms / 1000 * REFRESH_FRACTION
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="in-hand-refresher", daemon=True)

    def __enter__(self) -> Refresher:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.refresh_due()

    def refresh_due(self) -> int:
        """Refresh the batches due now; returns the number of entries refreshed (0 on a
        Redis failure, logged: the next turn tries again)."""
        started = self._clock()
        batches, held = self.in_hand.due(self.every_s)
        if not batches:
            return 0
        try:
            refreshed, gone = self._refresh(held)
        except StreamprocError as exc:  # the reading thread meets the same failure and handles it
            log.warning("could not refresh the entries in hand", error=str(exc), kind=type(exc).__name__)
            return 0
        self.in_hand.refreshed(batches, started)
        metrics.REFRESHED.inc(refreshed)
        log.info("refreshed entries in hand", entries=refreshed, not_pending_here=gone, batches=len(batches))
        return refreshed


def _ids(batch: Batch) -> list[tuple[str, bytes]]:
    return [(s, eid) for s, entries in batch.entries.items() for eid, _ in entries]
