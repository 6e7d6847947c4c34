"""Is another process reading the group under this daemon's consumer name?

Two daemons with one consumer name share one pending list: XAUTOCLAIM, the pending
accounting and ``consumers drain`` all assume each name is one process. Before this
daemon reads anything, a consumer of its name that Redis saw *after* the daemon started
can only be another process.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamproc.redis.client import Client


def idle_ms_by_stream(client: Client, streams: Sequence[str], group: str, consumer: str) -> dict[str, int]:
    """Stream -> milliseconds since the consumer named ``consumer`` last tried to read or claim in
    ``group`` there (XINFO CONSUMERS ``idle``), for each stream where such a consumer exists.
    Raises redis-py errors (a missing group among them)."""
    out: dict[str, int] = {}
    for stream in streams:
        for row in client.xinfo_consumers(stream, group):
            name = row.get("name")
            if (name.decode() if isinstance(name, bytes) else str(name)) == consumer:
                out[stream] = int(row.get("idle", 0))
    return out
