"""One Postgres connection per flusher thread."""

from __future__ import annotations

import threading

from streamproc.postgres.sink import PostgresSink


class ThreadSinks:
    """The first thread to ask gets the worker's own sink (already open), each further
    thread a twin of it; :meth:`close` closes them all."""

    def __init__(self, sink: PostgresSink) -> None:
        self.sink = sink
        self._local = threading.local()
        self._lock = threading.Lock()
        self._in_use: list[PostgresSink] = []

    def get(self) -> PostgresSink:
        """This thread's sink."""
        sink: PostgresSink | None = getattr(self._local, "sink", None)
        if sink is None:
            with self._lock:
                sink = self.sink.twin() if self._in_use else self.sink
                self._in_use.append(sink)
            self._local.sink = sink
        return sink

    def close(self) -> None:
        with self._lock:
            for sink in {id(s): s for s in [self.sink, *self._in_use]}.values():
                sink.close()
