"""Entries deleted before the group read them (a producer's ``XADD … MAXLEN``, an XTRIM, an XDEL).

Redis 7 keeps enough to count them, at the moment the group's read skips
them: ``XINFO STREAM`` gives ``entries-added`` (every entry ever added),
``length`` and the first entry; ``XINFO GROUPS`` gives the group's
``entries-read`` (its logical read counter) and ``last-delivered-id``. When
every entry still in the stream lies after the group's last-delivered id, the
entries lost to the group are ``entries-added - entries-read - length``
(``max-deleted-entry-id`` does not help: MAXLEN and XTRIM leave it alone).

:func:`read_counting_gaps` asks both and reads, in one MULTI/EXEC, so exactly
one read - whichever worker's - skips a gap and counts it. What cannot be
known: the count when an entry was deleted *between* entries still in the
stream after the group's position (an XDEL in the middle; Redis reports the
lag as nil then), and a stream trimmed to nothing while the group is behind
(counted only if the next entry comes through this non-blocking read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamproc.core.entryid import split_entry_id
from streamproc.redis.client import Client


def read_counting_gaps(
    client: Client, streams: Sequence[str], group: str, consumer: str, count: int
) -> tuple[Any, dict[str, int]]:
    """Non-blocking XREADGROUP ``>`` on ``streams`` and, per stream, the entries the group lost
    to deletions skipped by this very read. Returns (the XREADGROUP reply, {stream: lost}).

    Raises the XREADGROUP's error (NOGROUP...) if it failed; a failed XINFO only means no count.
    """
    pipe = client.pipeline(transaction=True)
    for stream in streams:
        pipe.xinfo_stream(stream)
        pipe.xinfo_groups(stream)
    pipe.xreadgroup(group, consumer, {s: ">" for s in streams}, count=count)
    *infos, reply = pipe.execute(raise_on_error=False)
    if isinstance(reply, Exception):
        raise reply
    got = {_s(name) for name, entries in reply or [] if entries}
    lost: dict[str, int] = {}
    for i, stream in enumerate(streams):
        info, groups = infos[2 * i], infos[2 * i + 1]
        if stream in got and not isinstance(info, Exception) and not isinstance(groups, Exception):
            n = lost_before_delivery(info, groups, group)
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


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
