"""Reclaiming and keeping claims: XAUTOCLAIM's cursor walk, XCLAIM JUSTID refreshes, delivery counts.

Used by :class:`~streamproc.redis.source.RedisSource`; every function raises redis-py's
errors as they come (the source translates them). One stream per call, so each command
touches one key (one slot on a Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from streamproc.core.entryid import split_entry_id
from streamproc.redis.client import Client

Fields = dict[bytes, bytes]
Entry = tuple[bytes, Fields | None]

CURSOR_START: Final = b"0-0"
# XAUTOCLAIM calls per stream per reclaim turn; each scans at most COUNT x 10 PEL entries.
MAX_AUTOCLAIM_CALLS: Final = 10
# XPENDING over a range of ids: room for this consumer's other entries in between, and pages.
_PENDING_SLACK: Final = 100
_MAX_PENDING_PAGES: Final = 20


def autoclaim(
    client: Client, stream: str, group: str, consumer: str, min_idle_ms: int, want: int, cursor: bytes
) -> tuple[list[Entry], list[bytes], bytes]:
    """XAUTOCLAIM from ``cursor`` in a loop of at most ``MAX_AUTOCLAIM_CALLS`` calls.

    Returns up to ``want`` entries claimed (ids and fields), the ids XAUTOCLAIM reported
    deleted from the stream while pending (its third reply element, Redis >= 7; already
    dropped from the PEL), and the cursor to start from next time (``CURSOR_START`` once
    the whole PEL was walked).
    """
    claimed: list[Entry] = []
    deleted: list[bytes] = []
    for _ in range(MAX_AUTOCLAIM_CALLS):
        reply = client.xautoclaim(stream, group, consumer, min_idle_ms, start_id=cursor, count=want - len(claimed))
        cursor = _b(reply[0])
        claimed.extend((_b(eid), fields) for eid, fields in reply[1] if eid is not None and fields is not None)
        deleted.extend(_b(eid) for eid in (reply[2] if len(reply) > 2 else ()))
        if cursor == CURSOR_START or len(claimed) >= want:
            break
    return claimed, deleted, cursor


def pending_here(client: Client, stream: str, group: str, consumer: str, ids: Sequence[bytes]) -> dict[bytes, int]:
    """Delivery counts of those of ``ids`` pending under ``consumer``: XPENDING over their id
    range, one call unless more of this consumer's entries lie in between (then paged)."""
    if not ids:
        return {}
    wanted = set(ids)
    ordered = sorted(wanted, key=lambda eid: split_entry_id(eid.decode()))
    start, end = ordered[0].decode(), ordered[-1].decode()
    page = len(ordered) + _PENDING_SLACK
    found: dict[bytes, int] = {}
    for _ in range(_MAX_PENDING_PAGES):
        rows = client.xpending_range(stream, group, min=start, max=end, count=page, consumername=consumer)
        for row in rows:
            eid = _b(row["message_id"])
            if eid in wanted:
                found[eid] = int(row["times_delivered"])
        if len(rows) < page or len(found) == len(wanted):
            break
        start = "(" + _b(rows[-1]["message_id"]).decode()
    return found


def refresh_held(client: Client, stream: str, group: str, consumer: str, ids: Sequence[bytes]) -> int:
    """Reset the idle time of ``ids`` still pending under ``consumer``; returns how many.

    ``XCLAIM <stream> <group> <consumer> 0 <ids> JUSTID``: no delivery counted. Only the ids
    XPENDING lists under ``consumer`` are claimed, since XCLAIM with min idle 0 would take an
    entry back from a consumer that reclaimed it meanwhile. XCLAIM skips ids not in the PEL
    (acked), and drops from the PEL ids deleted from the stream; neither is counted.
    """
    mine = list[Any](pending_here(client, stream, group, consumer, ids))
    if not mine:
        return 0
    return len(client.xclaim(stream, group, consumer, 0, mine, justid=True))  # JUSTID: the ids claimed


def _b(value: bytes | str | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
