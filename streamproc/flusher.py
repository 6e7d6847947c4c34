"""Overlap Postgres with Redis: one batch commits while the next is read and folded.

A single flusher thread takes prepared batches from a one-slot queue and runs
``finish`` (commit, then ack) on each, in order. The main loop blocks when the
slot is full, so at most three batches are in memory: one committing, one
waiting, one being prepared. An exception in the flusher stops the flusher and
is re-raised in the main thread at its next call.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Final, Generic, TypeVar

J = TypeVar("J")
_STOP: Final = object()
_POLL_S: Final = 0.2


class Flusher(Generic[J]):
    def __init__(self, finish: Callable[[J], object]) -> None:
        self._finish = finish
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._busy = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flusher", daemon=True)

    def __enter__(self) -> Flusher[J]:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        if exc is None:
            self.raise_if_failed()

    def submit(self, job: J) -> None:
        """Hand a prepared batch over; waits while the previous one is still queued."""
        while True:
            self.raise_if_failed()
            try:
                self._queue.put(job, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def idle(self) -> bool:
        """Nothing queued and nothing being committed."""
        return self._queue.empty() and not self._busy.is_set()

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Finish the batches handed over, then stop the thread."""
        if not self._thread.is_alive():
            return
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            self._busy.set()
            try:
                self._finish(job)  # type: ignore[arg-type]  # only J or _STOP are queued
            except BaseException as exc:  # handed to the main thread, which decides
                self._error = exc
                return
            finally:
                self._busy.clear()
