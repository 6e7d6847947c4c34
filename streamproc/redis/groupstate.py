"""One stream's consumer-group state, as `status` and the metrics report it."""

from __future__ import annotations

import time
from typing import Any, Final

from streamproc.redis.client import Client

LAG_SCAN_LIMIT: Final = 10_000


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def read_group_state(client: Client, stream: str, group: str) -> dict[str, Any]:
    """Length, ids, lag, pending, oldest pending idle time, consumers and DLQ length.

    ``lag`` is Redis's own figure (XINFO GROUPS, Redis >= 7) when it has one;
    when Redis reports null (after deletions it cannot account for) it is
    counted from the entries after the last delivered id, up to
    ``LAG_SCAN_LIMIT``, and ``lag_exact`` says whether that count is exact.
    Raises ``redis.ResponseError`` if the stream does not exist.
    """
    info = client.xinfo_stream(stream)
    groups = {_s(g["name"]): g for g in client.xinfo_groups(stream)}
    first = info.get("first-entry")
    last = info.get("last-entry")
    state: dict[str, Any] = {
        "stream": stream,
        "group": group,
        "length": int(info["length"]),
        "first_id": _s(first[0]) if first else None,
        "last_id": _s(last[0]) if last else None,
        "last_generated_id": _s(info["last-generated-id"]),
        "dlq_length": int(client.xlen(f"{stream}:dlq")),
        "group_exists": group in groups,
        "last_delivered_id": None,
        "lag": None,
        "lag_exact": True,
        "pending": 0,
        "oldest_pending_id": None,
        "oldest_pending_idle_ms": 0,
        "oldest_pending_age_ms": 0,
        "consumers": [],
    }
    g = groups.get(group)
    if g is None:
        return state
    state["last_delivered_id"] = _s(g["last-delivered-id"])
    state["pending"] = int(g["pending"])
    lag = g.get("lag")
    if lag is None:
        behind = client.xrange(stream, min="(" + state["last_delivered_id"], max="+", count=LAG_SCAN_LIMIT)
        lag = len(behind or [])
        state["lag_exact"] = lag < LAG_SCAN_LIMIT
    state["lag"] = int(lag)
    if state["pending"]:
        oldest = client.xpending_range(stream, group, min="-", max="+", count=1)
        if oldest:
            state["oldest_pending_id"] = _s(oldest[0]["message_id"])
            state["oldest_pending_idle_ms"] = int(oldest[0]["time_since_delivered"])
            id_ms = int(state["oldest_pending_id"].partition("-")[0])
            state["oldest_pending_age_ms"] = max(0, int(time.time() * 1000) - id_ms)
    state["consumers"] = [
        {"name": _s(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
        for c in client.xinfo_consumers(stream, group)
    ]
    return state
