"""One stream's consumer-group state, as `status` and the metrics report it."""

from __future__ import annotations

import time
from typing import Any, Final

from streamproc.core.entryid import split_entry_id
from streamproc.redis.client import Client

LAG_SCAN_LIMIT: Final = 10_000  # entries counted when Redis reports no lag
LAG_CHECK_LIMIT: Final = 1_000  # Redis's lag up to this is checked against the stream


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def read_group_state(client: Client, stream: str, group: str) -> dict[str, Any]:
    """Length, ids, lag, pending, oldest pending idle time, consumers and DLQ length.

    ``lag``: the entries after the group's last-delivered id (:func:`lag_behind`);
    ``lag_exact`` says whether that figure is exact.
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
    state["lag"], state["lag_exact"] = lag_behind(client, stream, info, state["last_delivered_id"], g.get("lag"))
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


def lag_behind(
    client: Client, stream: str, info: dict[str, Any], position: str, reported: int | None
) -> tuple[int, bool]:
    """Entries of ``stream`` after the id ``position``, and whether that figure is exact.

    ``info``: the stream's XINFO STREAM; ``reported``: the lag XINFO GROUPS gave (Redis >= 7).
    Redis's figure is nil after deletions it cannot account for, and before Redis 8 it stays
    too high for good, by their number, once the group read across entries trimmed before it
    got to them (its read counter misses them; redis/redis#13957). So it is checked against
    the stream: 0 when the last entry is not after ``position``, the whole length when the
    first one is; otherwise a figure up to ``LAG_CHECK_LIMIT`` is counted with one XRANGE
    (exact below the limit), a nil one up to ``LAG_SCAN_LIMIT``, and a larger one is Redis's,
    bounded by the length.
    """
    length = int(info["length"])
    first, last = info.get("first-entry"), info.get("last-entry")
    here = split_entry_id(position)
    if not last or split_entry_id(_s(last[0])) <= here:
        return 0, True
    if first and split_entry_id(_s(first[0])) > here:
        return length, True
    if reported is not None and int(reported) > LAG_CHECK_LIMIT:
        return min(int(reported), length - 1), True  # the first entry is not after it
    limit = LAG_SCAN_LIMIT if reported is None else LAG_CHECK_LIMIT + 1
    counted = len(client.xrange(stream, min="(" + position, max="+", count=limit) or [])
    return counted, counted < limit
