"""Consumer-group housekeeping: list, drain and prune consumers; trim a stream safely.

No printing; the CLI renders the results. Deleting a consumer goes through a
Lua script that checks it has no pending entries in the same atomic step, so
a consumer that picked up work meanwhile is never deleted with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streamproc.core.entryid import split_entry_id
from streamproc.errors import SourceError
from streamproc.redis.client import Client
from streamproc.redis.deadletters import prune_marks
from streamproc.redis.ops import check_group, check_stream, id_after, text, xclaim_ids, xrange

DRAIN_CHUNK: Final = 1000

# KEYS: stream. ARGV: group, consumer. Returns -1 (still has pending entries) or 0 (deleted).
_DELETE_IF_IDLE_LUA: Final = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return -1 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 0
"""


@dataclass(frozen=True)
class Consumer:
    name: str
    pending: int
    idle_ms: int


def consumers(client: Client, stream: str, group: str) -> list[Consumer]:
    check_group(client, stream, group)
    return [Consumer(text(c["name"]), int(c["pending"]), int(c["idle"])) for c in client.xinfo_consumers(stream, group)]


def delete_if_no_pending(client: Client, stream: str, group: str, name: str) -> bool:
    """XGROUP DELCONSUMER, atomically only if ``name`` holds no pending entry; True if deleted."""
    script = client.register_script(_DELETE_IF_IDLE_LUA)
    return int(script(keys=[stream], args=[group, name])) == 0


@dataclass
class DrainResult:
    stream: str
    consumer: str
    to: str | None
    moved: int = 0
    vanished: int = 0  # pending entries already deleted from the stream: XCLAIM dropped them
    deleted: bool = False
    left: int = 0  # pending entries that arrived while draining (the consumer is still running?)
    present: bool = True


def drain(client: Client, stream: str, group: str, name: str, to: str | None) -> DrainResult:
    """Move ``name``'s pending entries to ``to`` in chunks (XCLAIM JUSTID), then delete ``name`` if it has none.

    ``to=None`` picks the most recently active other consumer; a consumer with
    pending entries and nobody to take them is left alone.
    """
    if to == name:
        raise ValueError("a consumer cannot be drained into itself")
    members = {c.name: c for c in consumers(client, stream, group)}
    result = DrainResult(stream=stream, consumer=name, to=to)
    if name not in members:
        result.present = False
        return result
    if members[name].pending and to is None:
        others = sorted((c for c in members.values() if c.name != name), key=lambda c: c.idle_ms)
        if not others:
            raise SourceError(
                f"consumer {name!r} has {members[name].pending} pending entries on {stream!r} and no other"
                " consumer exists to take them: name one with --to"
            )
        result.to = to = others[0].name
    rounds = members[name].pending // DRAIN_CHUNK + 2  # bounded: a consumer still running keeps getting entries
    while to is not None and rounds > 0:
        rounds -= 1
        rows = client.xpending_range(stream, group, min="-", max="+", count=DRAIN_CHUNK, consumername=name)
        if not rows:
            break
        ids = [text(row["message_id"]) for row in rows]
        claimed = xclaim_ids(client, stream, group, to, ids)
        result.moved += len(claimed)
        result.vanished += len(ids) - len(claimed)
    result.deleted = delete_if_no_pending(client, stream, group, name)
    if not result.deleted:
        result.left = len(client.xpending_range(stream, group, min="-", max="+", count=DRAIN_CHUNK, consumername=name))
    return result


@dataclass
class PruneResult:
    stream: str
    idle_ms: int
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    skipped: list[dict[str, str | int]] = field(default_factory=list)  # {name, pending, idle_ms, why}


def prune(client: Client, stream: str, group: str, idle_ms: int, *, dry_run: bool = False) -> PruneResult:
    """Delete consumers idle at least ``idle_ms`` that hold no pending entries; report the others."""
    result = PruneResult(stream=stream, idle_ms=idle_ms, dry_run=dry_run)
    for c in consumers(client, stream, group):
        if c.idle_ms < idle_ms:
            continue
        if c.pending:
            result.skipped.append(_skip(c, c.pending, stream))
        elif dry_run or delete_if_no_pending(client, stream, group, c.name):
            result.deleted.append(c.name)
        else:
            result.skipped.append(_skip(c, -1, stream))
    return result


def _skip(c: Consumer, pending: int, stream: str) -> dict[str, str | int]:
    n = "some" if pending < 0 else str(pending)
    return {
        "name": c.name,
        "pending": max(pending, 0),
        "idle_ms": c.idle_ms,
        "why": f"holds {n} pending entries; deleting it would drop them uncounted."
        f" Move them first: streamproc consumers drain {c.name} --stream {stream}",
    }


# --- trim -------------------------------------------------------------------------------


@dataclass
class GroupBound:
    group: str
    last_delivered_id: str
    oldest_pending_id: str | None
    first_undelivered_id: str | None
    keep_from: str | None  # lowest id this group still needs; None: it needs nothing in the stream


@dataclass
class TrimPlan:
    stream: str
    length: int
    minid: str  # XTRIM MINID: entries with a lower id go
    removable: int
    groups: list[GroupBound]
    removed: int | None = None  # set once trimmed
    marks_removed: int | None = None  # dead-letter marks of trimmed entries forgotten (see deadletters.prune_marks)
    retention_bound: str | None = None  # with a retention: entries from this id on are young enough to keep


def plan_trim(client: Client, stream: str, retention_ms: int | None = None, now_ms: int | None = None) -> TrimPlan:
    """The safe XTRIM MINID: the lowest id still pending in ANY group or not yet delivered to ANY group,
    and, with ``retention_ms``, no later than the id of ``now_ms - retention_ms`` (entries younger
    than the retention stay even when every group is done with them)."""
    check_stream(client, stream)
    groups = client.xinfo_groups(stream)
    if not groups:
        raise SourceError(
            f"stream {stream!r} has no consumer group, so nothing says which entries were processed; not trimming"
        )
    info = client.xinfo_stream(stream)
    bounds = [_group_bound(client, stream, g) for g in groups]
    needed = [b.keep_from for b in bounds if b.keep_from is not None]
    minid = min(needed, key=split_entry_id) if needed else id_after(text(info["last-generated-id"]))
    retention_bound = None
    if retention_ms is not None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        retention_bound = f"{max(0, now - retention_ms)}-0"
        minid = min(minid, retention_bound, key=split_entry_id)
    length = int(info["length"])
    removable = length - _count_from(client, stream, minid)
    return TrimPlan(stream, length, minid, removable, bounds, retention_bound=retention_bound)


def _group_bound(client: Client, stream: str, g: dict[str, Any]) -> GroupBound:
    name = text(g["name"])
    last = text(g["last-delivered-id"])
    summary = client.xpending(stream, name)
    oldest = text(summary["min"]) if summary["pending"] else None
    nxt = xrange(client, stream, "(" + last, "+", 1)
    first_new = text(nxt[0][0]) if nxt else None
    candidates = [x for x in (oldest, first_new) if x is not None]
    keep = min(candidates, key=split_entry_id) if candidates else None
    return GroupBound(name, last, oldest, first_new, keep)


def _count_from(client: Client, stream: str, start_id: str) -> int:
    total, start = 0, start_id
    while True:
        rows = xrange(client, stream, start, "+", 1000)
        total += len(rows)
        if len(rows) < 1000:
            return total
        start = "(" + text(rows[-1][0])


def trim(client: Client, plan: TrimPlan) -> TrimPlan:
    """Apply ``plan``: exact XTRIM MINID (never approximate, so never past the bound), then
    forget the dead-letter marks of the entries no longer in the stream."""
    plan.removed = int(client.xtrim(plan.stream, minid=plan.minid, approximate=False))
    plan.marks_removed = prune_marks(client, plan.stream)
    return plan


def streams_with_consumer(client: Client, streams: Sequence[str], group: str, name: str) -> list[str]:
    return [s for s in streams if any(c.name == name for c in consumers(client, s, group))]
