"""Writing dead letters: the ``<stream>:dlq`` stream and the ``<stream>:dlq:ids`` hash.

A dead letter is the original entry's fields preceded by ``_dlq_source``,
``_dlq_id`` and ``_dlq_reason``. Reading, replaying and purging them is
:mod:`streamproc.redis.dlq`.

A source entry produces at most one dead letter, ever: ``<stream>:dlq:ids``
holds the id of every source entry dead-lettered. After ``XGROUP SETID``
rewinds a group, or when a zombie consumer acks late, the entry is acked again
but not dead-lettered twice (so ``dlq replay --all`` counts it once). No Lua:
an optimistic transaction (WATCH the hash, read which ids it holds and which
are still pending, then MULTI: XADD the new dead letters, HSET their ids, XACK
all, EXEC) — a Redis user without scripting rights can run it. An EXEC whose
reply is lost is never sent again on its own: the connection error ends the
WATCH (redis-py raises WatchError) and the whole check is made again, which finds
the ids marked if the EXEC ran. On a Redis Cluster the transaction runs on the
node's own client for that reason: redis-py's cluster pipeline re-sends MULTI …
EXEC on a new connection without the WATCH, which wrote the letters twice.

A mark is needed only while its source entry can be delivered again, that is while the
entry is still in the stream: :func:`prune_marks` forgets the others (``streamproc trim``
and ``dlq purge`` run it), so the hash shrinks with the stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import redis
import redis.exceptions as rx
from redis.cluster import RedisCluster

from streamproc.core.entryid import split_entry_id
from streamproc.redis.client import Client

DeadLetter = tuple[bytes, Mapping[bytes, bytes], str]  # entry id, original fields, reason

_MAX_WATCH_ATTEMPTS: Final = 100  # another worker writing dead letters of the same stream at once
_SCAN_COUNT: Final = 1000


def dlq_key(stream: str) -> str:
    """The dead-letter stream of ``stream``: ``<stream>:dlq``."""
    return f"{stream}:dlq"


def dlq_ids_key(stream: str) -> str:
    """The hash of source entry ids already dead-lettered: ``<stream>:dlq:ids``."""
    return f"{stream}:dlq:ids"


def dead_letter_fields(stream: str, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str) -> list[Any]:
    """The flat field list of one dead letter: the three ``_dlq_*`` fields first, then the original ones."""
    flat: list[Any] = [b"_dlq_source", stream, b"_dlq_id", entry_id, b"_dlq_reason", reason]
    for k, v in fields.items():
        flat.extend((k, v))
    return flat


def write_dead_letters(client: Client, stream: str, group: str, consumer: str, items: Sequence[DeadLetter]) -> int:
    """Ack ``items`` (entries of ``stream`` pending in ``group``) and dead-letter those that are
    still pending and were never dead-lettered before; returns how many dead letters were written.

    Atomic (MULTI/EXEC under WATCH of ``<stream>:dlq:ids``). Raises redis-py errors as they come.
    """
    if not items:
        return 0
    ids = [eid for eid, _, _ in items]
    seen_key = dlq_ids_key(stream)
    for _ in range(_MAX_WATCH_ATTEMPTS):
        with _transaction_client(client, seen_key).pipeline(transaction=True) as pipe:
            try:
                pipe.watch(seen_key)  # type: ignore[no-untyped-call]  # redis-py leaves Pipeline.watch untyped
                seen = pipe.hmget(seen_key, ids)
                # Still pending: XCLAIM ... JUSTID moves no delivery count and returns only ids
                # in the pending list (an entry another consumer acked is not dead-lettered).
                claimed: list[bytes | str] = pipe.xclaim(stream, group, consumer, 0, list[Any](ids), justid=True)  # type: ignore[assignment]  # JUSTID: ids only
                pending = {_b(x) for x in claimed}
                fresh = [item for item, mark in zip(items, seen, strict=True) if mark is None and item[0] in pending]
                pipe.multi()
                for eid, fields, reason in fresh:
                    fields_flat = dead_letter_fields(stream, eid, fields, reason)
                    pipe.execute_command("XADD", dlq_key(stream), "*", *fields_flat)  # type: ignore[no-untyped-call]  # untyped in redis-py
                if fresh:
                    pipe.hset(seen_key, mapping={eid: b"1" for eid, _, _ in fresh})
                pipe.xack(stream, group, *ids)
                pipe.execute()
                return len(fresh)
            except rx.WatchError:
                continue
            except (rx.MovedError, rx.AskError):
                if not isinstance(client, RedisCluster):
                    raise
                client.nodes_manager.initialize()  # the slot moved: ask the cluster where it is now
                continue
    raise rx.TryAgainError(f"dead letters of {stream!r}: the transaction kept being interrupted")


def _transaction_client(client: Client, key: str) -> redis.Redis:
    """Where the transaction on ``key`` runs: ``client`` itself, or on a cluster the plain client
    of the node that holds ``key``'s slot (see the module docstring)."""
    if not isinstance(client, RedisCluster):
        return client
    node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]  # untyped in redis-py
    plain: redis.Redis | None = None if node is None else node.redis_connection
    if plain is None:
        raise rx.ConnectionError(f"no cluster node known for {key!r} yet")
    return plain


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def prune_marks(client: Client, stream: str) -> int:
    """Remove from ``<stream>:dlq:ids`` the ids of source entries no longer in ``stream`` (below
    its first entry; every id when the stream is empty): an entry gone from the stream is never
    delivered again, so its mark guards nothing. Marks of entries still in the stream stay,
    whether their dead letter is in the DLQ, replayed or purged: a group rewound with
    ``XGROUP SETID`` redelivers those entries, and they must not be dead-lettered twice.
    Returns how many marks were removed (HSCAN, then HDEL in chunks). Raises redis-py errors.
    """
    first = client.xrange(stream, count=1)
    bound = split_entry_id(_b(first[0][0] or b"0-0").decode()) if first else None
    key, cursor, removed = dlq_ids_key(stream), 0, 0
    while True:
        cursor, marks = client.hscan(key, cursor, count=_SCAN_COUNT)
        gone = [eid for eid in marks if bound is None or split_entry_id(_b(eid).decode()) < bound]
        if gone:
            removed += int(client.hdel(key, *gone))
        if cursor == 0:
            return removed
