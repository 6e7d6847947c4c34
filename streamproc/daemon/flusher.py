"""Overlap Postgres with Redis and Python: batches commit while the next is read and folded.

``threads`` flusher threads take prepared batches from a one-slot queue and
run ``finish`` (commit, then ack) on each, each thread with its own Postgres
connection: while one waits for Postgres, another builds its statements, so
the daemon's Python and Postgres work overlap. Batches may commit in any
order; each is its own transaction and the ledger makes the order irrelevant.
The main loop blocks when the slot is full, so at most ``threads + 2``
batches are in memory: ``threads`` committing, one waiting, one being
prepared. An exception in a flusher stops that flusher and is re-raised in
the main thread at its next call.
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
    def __init__(self, finish: Callable[[J], object], threads: int = 1) -> None:
        self._finish = finish
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"flusher-{i}" if threads > 1 else "flusher", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Flusher[J]:
        for thread in self._threads:
            thread.start()
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

    def wait_idle(self) -> None:
        """Wait until every batch handed over is finished (raises a flusher's failure)."""
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                self.raise_if_failed()
                self._queue.all_tasks_done.wait(_POLL_S)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Finish the batches handed over, then stop the threads."""
        for _ in self._threads:
            while any(t.is_alive() for t in self._threads):
                try:
                    self._queue.put(_STOP, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._finish(job)  # type: ignore[arg-type]  # only J or _STOP are queued
            except BaseException as exc:  # handed to the main thread, which decides
                self._error = exc
                return
            finally:
                self._queue.task_done()
