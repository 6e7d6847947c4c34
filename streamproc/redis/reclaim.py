"""Reclaiming and keeping claims: XAUTOCLAIM's cursor walk, XCLAIM JUSTID refreshes, delivery counts.

An entry is handed out in a batch at most ``BATCH_DELIVERIES`` times: :func:`reclaim_stream`
looks at the delivery counts first (XPENDING IDLE) and claims an entry delivered that often
before on its own, only when the process holds nothing else (see
:mod:`streamproc.daemon.redelivery`).

Used by :class:`~streamproc.redis.source.RedisSource`; every function raises redis-py's
errors as they come (the source translates them). One stream per call, so each command
touches one key (one slot on a Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
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
# Deliveries an entry may get as part of a batch: its first read and one redelivery after the
# worker holding it died or stalled. Every later delivery is made to a process holding nothing
# else, so a death of the process is charged to that entry only. max_deliveries is at least 3.
BATCH_DELIVERIES: Final = 2


@dataclass
class Reclaimed:
    """What :func:`reclaim_stream` took from one stream."""

    cursor: bytes  # where the next turn starts
    entries: list[Entry] = field(default_factory=list)
    counts: dict[bytes, int] = field(default_factory=dict)  # delivery counts, this delivery included
    deleted: list[bytes] = field(default_factory=list)  # pending ids deleted from the stream (XAUTOCLAIM)
    alone: bool = False  # one entry delivered BATCH_DELIVERIES times before, claimed on its own
    waiting: bool = False  # such an entry is next, left unclaimed: the process holds other entries


def reclaim_stream(
    client: Client,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    want: int,
    cursor: bytes,
    skip: Collection[bytes] = (),
    alone_ok: bool = True,
) -> Reclaimed:
    """Claim up to ``want`` entries idle at least ``min_idle_ms``, from ``cursor`` on.

    First XPENDING IDLE lists the idle entries with their delivery counts. Those delivered
    fewer than ``BATCH_DELIVERIES`` times are claimed together (XAUTOCLAIM from the first of
    them, COUNT how many lead the list); an entry delivered that often is claimed alone, and
    only with ``alone_ok`` (else ``waiting`` says it is next). Should XAUTOCLAIM claim more
    than was chosen (a chosen entry was acked or deleted meanwhile), the extra ones get their
    delivery count back (XCLAIM RETRYCOUNT JUSTID) and stay pending here, not handed out.
    ``skip``: ids this process holds (claimed anyway, they are left out). Raises redis-py errors.
    """
    # Entries in hand look idle only when their refresh failed; asked for on top, so they never
    # hide the idle entries behind them.
    page = want + len(skip)
    rows = client.xpending_range(stream, group, min=cursor.decode(), max="+", count=page, idle=min_idle_ms)
    rows = [row for row in rows if _b(row["message_id"]) not in skip][:want]
    if not rows:
        return Reclaimed(CURSOR_START)  # nothing idle after the cursor: the next turn starts over
    first = _b(rows[0]["message_id"])
    alone = int(rows[0]["times_delivered"]) >= BATCH_DELIVERIES
    if alone and not alone_ok:
        return Reclaimed(cursor, waiting=True)
    chosen = {first}
    if not alone:
        for row in rows[1:]:
            if int(row["times_delivered"]) >= BATCH_DELIVERIES:
                break
            chosen.add(_b(row["message_id"]))
    claimed, deleted, next_cursor = autoclaim(client, stream, group, consumer, min_idle_ms, len(chosen), first)
    entries = [(eid, fields) for eid, fields in claimed if eid not in skip]
    counts = pending_here(client, stream, group, consumer, [eid for eid, _ in entries])
    if not alone:
        extra = {eid: counts[eid] - 1 for eid, _ in entries if eid not in chosen and eid in counts}
        if extra:
            give_back_delivery(client, stream, group, consumer, extra)
            entries = [(eid, fields) for eid, fields in entries if eid not in extra]
            counts = {eid: n for eid, n in counts.items() if eid not in extra}
    return Reclaimed(next_cursor, entries, counts, deleted, alone=alone)


def give_back_delivery(client: Client, stream: str, group: str, consumer: str, counts: Mapping[bytes, int]) -> None:
    """Set the delivery count of entries claimed but not handed out back to ``counts``:
    ``XCLAIM <stream> <group> <consumer> 0 <id> RETRYCOUNT <n> JUSTID``, one per entry."""
    pipe = client.pipeline(transaction=False)
    for eid, n in counts.items():
        pipe.xclaim(stream, group, consumer, 0, [eid], retrycount=max(n, 1), justid=True)
    pipe.execute()


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
