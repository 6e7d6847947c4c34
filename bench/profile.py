"""Where the daemon's CPU goes per event: a cProfile run of the synchronous path."""

from __future__ import annotations

import cProfile
import pstats
import secrets
from typing import Any

import redis

from bench.yardsticks import GROUP, load
from streamproc.config import load_settings
from streamproc.daemon.run import build_worker
from streamproc.dev.synth import SynthEntry
from streamproc.logs import configure

# step -> (file suffix, function name) whose cumulative time is the step's
STEPS = {
    "read": ("streamproc/redis/source.py", "read_new"),
    "decode": ("streamproc/daemon/worker.py", "decode"),
    "fold": ("streamproc/core/fold.py", "fold"),
    "flush": ("streamproc/daemon/worker.py", "flush"),
    "ack": ("streamproc/daemon/worker.py", "ack"),
}


def breakdown(redis_url: str, database_url: str, entries: list[SynthEntry]) -> dict[str, Any]:
    configure("warning", json=True)
    client = redis.Redis.from_url(redis_url)
    stream = f"bench:profile:{secrets.token_hex(3)}"
    load(client, stream, entries)
    settings = load_settings(
        {
            "redis_url": redis_url,
            "database_url": database_url,
            "db_schema": "bench",
            "streams": stream,
            "group": GROUP,
            "consumer": "profile",
            "visitor_secret": secrets.token_hex(16),
            "metrics_port": 0,
        },
        environ={},
    )
    worker = build_worker(settings, drain=True)
    worker.start()
    prof = cProfile.Profile()
    prof.enable()
    while True:  # the synchronous path: each step in turn, nothing overlapped
        batch = worker.source.read_new(settings.batch_size, 10)
        if batch.is_empty():
            break
        worker.process(batch)
    prof.disable()
    worker.source.close()
    worker.sink.close()
    client.close()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]  # documented but untyped
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in stats.values())
    out: dict[str, float] = {}
    for step, (suffix, name) in STEPS.items():
        out[step] = sum(
            ct for (file, _line, fn), (_cc, _nc, _tt, ct, _c) in stats.items() if file.endswith(suffix) and fn == name
        )
    n = len(entries)
    return {
        "events": n,
        "note": "cProfile wall time (inflated by the profiler); compare steps, not absolute speed",
        "us_per_event": {k: round(v / n * 1e6, 1) for k, v in out.items()} | {"total": round(total / n * 1e6, 1)},
    }
