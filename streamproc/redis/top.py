"""`streamproc top`: samples of each stream's group counters, and rates between two samples."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamproc.redis.client import Client
from streamproc.redis.groupstate import read_group_state
from streamproc.redis.ops import check_group, text


@dataclass(frozen=True)
class Sample:
    """One stream's group counters at one instant."""

    stream: str
    at_s: float  # time.monotonic()
    entries_read: int  # entries delivered to the group so far (Redis's counter, or added - lag)
    entries_read_exact: bool
    lag: int | None
    pending: int
    dlq_length: int
    dlq_added: int  # entries ever added to the DLQ (not lowered by replay or purge)


def sample(client: Client, streams: Sequence[str], group: str) -> list[Sample]:
    """The counters of ``group`` on each stream now; raises StreamMissing / NoSuchGroup."""
    out = []
    for stream in streams:
        check_group(client, stream, group)
        state = read_group_state(client, stream, group)
        info = client.xinfo_stream(stream)
        mine = next(g for g in client.xinfo_groups(stream) if text(g["name"]) == group)
        added = int(info.get("entries-added") or 0)
        read = mine.get("entries-read")
        exact = read is not None
        if read is None:
            read = added - int(state["lag"] or 0)
        dlq = f"{stream}:dlq"
        dlq_added = int(client.xinfo_stream(dlq).get("entries-added") or 0) if client.exists(dlq) else 0
        out.append(
            Sample(
                stream=stream,
                at_s=time.monotonic(),
                entries_read=int(read),
                entries_read_exact=exact,
                lag=state["lag"],
                pending=int(state["pending"]),
                dlq_length=int(state["dlq_length"]),
                dlq_added=dlq_added,
            )
        )
    return out


def rates(prev: Sample | None, cur: Sample) -> dict[str, Any]:
    """One `top` row: the current figures and per-second rates since ``prev`` (None on the first sample)."""
    row: dict[str, Any] = {
        "stream": cur.stream,
        "lag": cur.lag,
        "pending": cur.pending,
        "dlq_length": cur.dlq_length,
        "delivered_per_s": None,
        "dlq_per_s": None,
    }
    if prev is not None and cur.at_s > prev.at_s:
        span = cur.at_s - prev.at_s
        row["delivered_per_s"] = round(max(0, cur.entries_read - prev.entries_read) / span, 1)
        row["dlq_per_s"] = round(max(0, cur.dlq_added - prev.dlq_added) / span, 1)
    return row
