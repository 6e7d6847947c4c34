"""Entries in hand: read by this process and not yet acknowledged.

Reclaim skips them, so a batch that waits for Postgres is never taken back by
its own consumer. Shared by the reading thread and the flusher threads.
"""

from __future__ import annotations

import threading

from streamproc.redis.source import Batch


class InHand:
    """A thread-safe set of ``(stream, entry id)``."""

    def __init__(self) -> None:
        self._ids: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def add(self, batch: Batch) -> None:
        with self._lock:
            self._ids.update(_ids(batch))

    def discard(self, batch: Batch) -> None:
        with self._lock:
            self._ids.difference_update(_ids(batch))

    def snapshot(self) -> frozenset[tuple[str, bytes]]:
        with self._lock:
            return frozenset(self._ids)


def _ids(batch: Batch) -> list[tuple[str, bytes]]:
    return [(s, eid) for s, entries in batch.entries.items() for eid, _ in entries]
