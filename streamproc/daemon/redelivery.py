"""Entries delivered again, and the poison limit: this consumer's own pending entries after a
restart, entries reclaimed from other consumers, entries redelivered too often.

The rule that keeps good entries away from ``max_deliveries``: an entry is handed out in a
batch at most ``BATCH_DELIVERIES`` (2) times - its first read and one redelivery after the
worker holding it died or stalled. Every later delivery hands it to this process *alone*:
nothing else in hand, every flusher idle, processed in the main thread. A death of the process
(a crash an entry causes, a kill -9, an OOM kill) therefore adds a delivery past the second
only to an entry the process held alone; deaths caused by other entries never count against
it. An entry that passes ``max_deliveries`` (at least 3) was the only entry in hand when the
worker died or stalled, ``max_deliveries - 2`` times or more, and its dead letter says so.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import structlog

from streamproc.config import Settings
from streamproc.core.decode import Rejected
from streamproc.daemon.accounting import Accounting
from streamproc.daemon.inhand import InHand
from streamproc.daemon.notify import Notifier
from streamproc.daemon.retry import Retrier
from streamproc.redis.reclaim import BATCH_DELIVERIES, Entry
from streamproc.redis.source import Batch, RedisSource

log = structlog.get_logger("streamproc")


def poison_reason(deliveries: int, max_deliveries: int) -> str:
    """The dead-letter reason of an entry delivered ``deliveries`` times (> ``max_deliveries``)."""
    return (
        f"delivered {deliveries} times without being committed (max_deliveries={max_deliveries});"
        f" from its delivery {BATCH_DELIVERIES + 1} on it was the only entry the worker held, and the"
        " worker died or stalled each time: this entry crashes or stalls the worker"
    )


def split_poison(
    entries: Sequence[Entry], counts: Mapping[bytes, int], max_deliveries: int
) -> tuple[list[Entry], list[Rejected]]:
    """The entries to decode, and those delivered more than ``max_deliveries`` times as
    rejected (not decoded: decoding may be what kills the worker)."""
    kept: list[Entry] = []
    poison: list[Rejected] = []
    for eid, fields in entries:
        n = counts.get(eid, 1)
        if n > max_deliveries:
            poison.append(Rejected(eid, fields or {}, poison_reason(n, max_deliveries)))
        else:
            kept.append((eid, fields))
    return kept, poison


class Redelivery:
    """Own pending entries after a restart, and reclaims, under the rule above.

    ``process(batch)`` runs a batch to its ack in the calling thread.
    """

    def __init__(
        self,
        settings: Settings,
        source: RedisSource,
        retry: Retrier,
        in_hand: InHand,
        accounting: Accounting,
        notifier: Notifier,
        stopping: threading.Event,
        process: Callable[[Batch], object],
    ) -> None:
        self.settings = settings
        self.source = source
        self.retry = retry
        self.in_hand = in_hand
        self.accounting = accounting
        self.notifier = notifier
        self.stopping = stopping
        self.process = process
        self._alone = False  # the last reclaim handed out an entry alone

    def recover_own_pending(self) -> None:
        """After a restart, finish this consumer's own pending entries first (before any
        flusher runs, so nothing else is in hand).

        If some were already delivered ``BATCH_DELIVERIES`` times (re-read after an earlier
        death), the worker may be dying on one of them: read them one at a time, so each death
        adds a delivery to one entry only and the culprit reaches max_deliveries (and the
        dead-letter stream) before its neighbours.
        """
        highest = self.retry.read(self.source.own_pending_max_deliveries, on_stop=lambda: 0)
        alone = highest >= BATCH_DELIVERIES
        count = 1 if alone else self.settings.batch_size
        if alone:
            log.warning("recovering own pending entries one at a time: an earlier run died on them")
        while not self.stopping.is_set():
            batch = self.retry.read(lambda: self.source.read_own_pending(count))
            if batch.is_empty():
                return
            log.info("recovering own pending entries", entries=len(batch))
            self.process(batch)
            self.notifier.watchdog()

    def reclaim(self, wait_idle: Callable[[], None]) -> Batch:
        """Entries idle longer than min_idle_ms (XAUTOCLAIM), never those this process holds.

        An entry due alone (``batch.alone``) is claimed only once nothing else is in hand:
        when one is next, ``wait_idle()`` lets the flushers finish first and the claim is made
        again. The caller processes an ``alone`` batch in its own thread before reading more.
        """
        batch = self._claim()
        if batch.waiting and not batch.entries:
            wait_idle()
            again = self._claim()
            for stream, ids in batch.trimmed.items():  # XAUTOCLAIM reported them once: keep them
                again.trimmed.setdefault(stream, []).extend(ids)
            batch = again
        if not batch.is_empty():
            self.accounting.reclaimed(batch)
        if batch.alone and not self._alone:  # once per run of such entries, not once per entry
            log.warning("reclaiming entries one at a time: workers died holding them twice before")
        self._alone = batch.alone or (self._alone and batch.is_empty())
        return batch

    def _claim(self) -> Batch:
        in_hand = self.in_hand.snapshot()
        min_idle_ms, count = self.settings.min_idle_ms, self.settings.batch_size
        return self.retry.read(lambda: self.source.reclaim(min_idle_ms, count, in_hand, alone_ok=not in_hand))
