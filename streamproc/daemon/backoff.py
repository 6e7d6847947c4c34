"""Reconnect backoff and test failpoints: the two small helpers of the loop."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import ClassVar


class Backoff:
    """Exponential backoff with full jitter. Tests may patch the class constants."""

    INITIAL_S: ClassVar[float] = 0.1
    MAX_S: ClassVar[float] = 5.0
    FACTOR: ClassVar[float] = 2.0

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._sleep = sleep
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.MAX_S, self.INITIAL_S * self.FACTOR**self.attempts)
        self.attempts += 1
        return random.uniform(ceiling / 2, ceiling)

    def wait(self) -> float:
        delay = self.next_delay()
        self._sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempts = 0


class Failpoints:
    """Crash the process at a named point, for fault tests only.

    ``STREAMPROC_FAILPOINTS=after_commit@3`` SIGKILLs the daemon the third
    time it passes ``after_commit``; ``before_flush@2:stop`` SIGSTOPs it
    instead (a zombie consumer); ``content=MARKER`` SIGKILLs it on an entry
    carrying MARKER, ``hang=MARKER`` blocks the thread decoding such an entry
    for good (a hung main loop, while the other threads carry on). Several
    points are comma-separated. Read once when the worker starts; empty in production.
    """

    def __init__(self, spec: str = "") -> None:
        self._at: dict[str, tuple[int, signal.Signals]] = {}
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()  # flusher threads pass the same points
        self.content: bytes | None = None  # ``content=MARKER``: die on any entry carrying MARKER
        self.hang: bytes | None = None  # ``hang=MARKER``: block forever on any entry carrying MARKER
        for item in filter(None, (p.strip() for p in spec.split(","))):
            if item.startswith("content="):
                self.content = item.removeprefix("content=").encode()
                continue
            if item.startswith("hang="):
                self.hang = item.removeprefix("hang=").encode()
                continue
            point, _, action = item.partition(":")
            name, _, nth = point.partition("@")
            sig = signal.SIGSTOP if action == "stop" else signal.SIGKILL
            self._at[name] = (int(nth or 1), sig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Failpoints:
        return cls(environ.get("STREAMPROC_FAILPOINTS", ""))

    def check_content(self, fields: Mapping[bytes, bytes] | None) -> None:
        """SIGKILL if an entry carries the content marker: an entry that crashes the worker."""
        if self.content is not None and fields and any(self.content in v for v in fields.values()):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hang is not None and fields and any(self.hang in v for v in fields.values()):
            threading.Event().wait()

    def hit(self, name: str) -> None:
        if name not in self._at:
            return
        with self._lock:
            self._hits[name] = self._hits.get(name, 0) + 1
            hits = self._hits[name]
        nth, sig = self._at[name]
        if hits == nth:
            os.kill(os.getpid(), sig)
