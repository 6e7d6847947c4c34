"""Entries deleted before the group read them (a producer's ``XADD … MAXLEN``, an XTRIM, an XDEL).

Redis 7 keeps enough to count them, at the moment the group's read skips
them: ``XINFO STREAM`` gives ``entries-added`` (every entry ever added),
``length`` and the first entry; ``XINFO GROUPS`` gives the group's
``entries-read`` (its logical read counter) and ``last-delivered-id``. When
every entry still in the stream lies after the group's last-delivered id, the
entries lost to the group are ``entries-added - entries-read - length``
(``max-deleted-entry-id`` does not help: MAXLEN and XTRIM leave it alone).

:func:`read_counting_gaps` asks both and reads, in one MULTI/EXEC, so exactly
one read - whichever worker's - skips a gap and counts it. On a Redis Cluster a
MULTI may only touch one hash slot: the streams are grouped by slot and each
group gets its own MULTI/EXEC on the primary serving that slot (with hash-tagged
shards, ``events:{0}``, ``events:{1}``…, one per stream), so each stream key is
counted the same way as on a single Redis.

What cannot be known: the count when an entry was deleted *between* entries
still in the stream after the group's position (an XDEL in the middle; Redis
reports the lag as nil then), and a stream trimmed to nothing while the group
is behind (counted only if the next entry comes through this non-blocking read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from redis.cluster import RedisCluster

from streamproc.core.entryid import split_entry_id
from streamproc.redis.client import Client

# One stream's reply to XREADGROUP, in the RESP2 shape the rest of the code reads:
# [stream name, [(entry id, {field: value} or None for a deleted pending entry), ...]].
StreamReply = list[Any]


def read_counting_gaps(
    client: Client, streams: Sequence[str], group: str, consumer: str, count: int
) -> tuple[list[StreamReply], dict[str, int]]:
    """Non-blocking XREADGROUP ``>`` (up to ``count`` entries per stream) on ``streams`` and, per
    stream, the entries the group lost to deletions skipped by this very read.

    Returns (the XREADGROUP reply as [[stream, [(id, fields), ...]], ...], {stream: lost}).
    One MULTI/EXEC per hash slot on a cluster, one in all otherwise. Raises the XREADGROUP's
    error (NOGROUP...) if it failed; a failed XINFO only means no count for that stream.
    """
    reply: list[StreamReply] = []
    lost: dict[str, int] = {}
    for part in _by_slot(client, streams):
        part_reply, part_lost = _read_one_slot(client, part, group, consumer, count)
        reply.extend(part_reply)
        lost.update(part_lost)
    return reply, lost


def _by_slot(client: Client, streams: Sequence[str]) -> list[list[str]]:
    """``streams`` grouped by hash slot on a cluster (in their order); all together otherwise."""
    if not isinstance(client, RedisCluster):
        return [list(streams)]
    groups: dict[int, list[str]] = {}
    for stream in streams:
        slot: int = client.keyslot(stream)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        groups.setdefault(slot, []).append(stream)
    return list(groups.values())


def _read_one_slot(
    client: Client, streams: Sequence[str], group: str, consumer: str, count: int
) -> tuple[list[StreamReply], dict[str, int]]:
    pipe = client.pipeline(transaction=True)
    for stream in streams:
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
    pipe.xreadgroup(group, consumer, {s: ">" for s in streams}, count=count)
    *infos, raw = pipe.execute(raise_on_error=False)
    if isinstance(raw, Exception):
        raise raw
    reply = _xread_reply(raw)
    got = {_s(name) for name, entries in reply if entries}
    lost: dict[str, int] = {}
    for i, stream in enumerate(streams):
        info, groups = infos[2 * i], infos[2 * i + 1]
        if stream in got and not isinstance(info, Exception) and not isinstance(groups, Exception):
            n = lost_before_delivery(_as_map(info), [_as_map(g) for g in groups], group)
            if n:
                lost[stream] = n
    return reply, lost


def lost_before_delivery(info: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], group: str) -> int:
    """Entries of the stream deleted after ``group``'s last-delivered id and never delivered to it,
    from XINFO STREAM and XINFO GROUPS taken together; 0 when none, or when it cannot be known."""
    mine = next((g for g in groups if _s(g["name"]) == group), None)
    first = info.get("first-entry")
    if mine is None or not first:
        return 0
    last = split_entry_id(_s(mine["last-delivered-id"]))
    if split_entry_id(_s(first[0])) <= last:
        return 0  # a remaining entry precedes the group's position: whatever was deleted is not countable
    entries_read = mine.get("entries-read")
    if entries_read is None:
        if last != (0, 0):
            return 0  # Redis lost track of the group's read counter
        entries_read = 0  # a group that never delivered anything (created at 0 on an empty stream)
    return max(0, int(info["entries-added"]) - int(entries_read) - int(info["length"]))


# redis-py applies no reply callbacks to the commands of a cluster MULTI/EXEC (8.x): their
# replies come as the server sent them, RESP3 maps with bytes keys by default. These
# helpers read either that or the parsed RESP2 shapes a single Redis's MULTI gives.


def _as_map(value: Any) -> dict[str, Any]:
    """An XINFO reply as {str key: value}: from a dict (str or bytes keys) or a flat RESP2 list."""
    if isinstance(value, Mapping):
        return {_s(k): v for k, v in value.items()}
    return {_s(value[i]): value[i + 1] for i in range(0, len(value), 2)}


def _xread_reply(raw: Any) -> list[StreamReply]:
    """XREADGROUP's reply as [[stream, [(id, {field: value} | None), ...]], ...] whatever its shape."""
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, Mapping) else ((part[0], part[1]) for part in raw)
    return [[name, [(eid, _fields(fields)) for eid, fields in entries or []]] for name, entries in pairs]


def _fields(fields: Any) -> dict[Any, Any] | None:
    if fields is None or isinstance(fields, dict):
        return fields
    return {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
