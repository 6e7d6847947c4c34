"""Two daemons under one consumer name: the second one says so at start, once, and runs on."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from streamproc.config import Settings
from tests.conftest import READY_TIMEOUT_S, Daemons, is_ready, wait_ready
from tests.test_ops import good

WARNING = "another process reads this group under the same consumer name"


def warnings(proc: Any) -> list[dict[str, Any]]:
    """The namesake warnings in ``proc``'s JSON log."""
    found = []
    for line in Path(proc.logfile).read_text(errors="replace").splitlines():
        if WARNING in line:
            found.append(json.loads(line))
    return found


def produce_until_ready(r: redis.Redis, stream: str, proc: Any) -> None:
    """Add an event every 50 ms until ``proc`` is ready, so that a running daemon keeps being
    handed entries (before Redis 7.2 only a read or claim that hands entries refreshes a
    consumer's idle time)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    i = 0
    while not is_ready(proc):
        assert proc.poll() is None, Path(proc.logfile).read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "daemon not ready (a hang at start)"
        r.xadd(stream, good(i))
        i += 1
        time.sleep(0.05)


def test_a_second_daemon_with_the_same_consumer_name_warns_once(
    make_settings: Callable[..., Settings], schema: str, daemons: Daemons, r: redis.Redis, stream: str
) -> None:
    """Daemon B starts while daemon A reads as consumer `same`: B logs one warning naming the
    consumer and the setting (and the `%H-%i` the units use), and keeps running; A, a daemon with
    another name, and a restart of `same` after both stopped (its earlier run is not a namesake)
    log none. B's start-up lasts at least 2 x its block_ms (10 s) before it looks: A is handed
    entries throughout."""
    settings = make_settings(consumer="same", block_ms=2000, enrich=False, filter_bots=False)
    first = daemons.start(settings)
    wait_ready(first)
    second = daemons.start(make_settings(consumer="same", block_ms=5000, enrich=False, filter_bots=False))
    produce_until_ready(r, stream, second)
    other = daemons.start(make_settings(consumer="other", block_ms=2000, enrich=False, filter_bots=False))
    wait_ready(other)

    (line,) = warnings(second)
    assert line["level"] == "warning" and line["consumer"] == "same" and line["group"] == "g"
    assert "--consumer" in line["event"] and "%H-%i" in line["event"]
    assert second.poll() is None, "a warning only: the daemon runs on"
    assert warnings(first) == [] and warnings(other) == []

    for proc in (first, second):
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    again = daemons.start(settings)
    wait_ready(again)
    assert warnings(again) == []
