"""Redis Cluster key rules, computed without a server: which hash slot a key lands in.

A stream's dead-letter keys (``<stream>:dlq``, ``<stream>:dlq:replayed``) must
hash to the stream's slot, true when the name carries a hash tag such as
``events:{0}``. :func:`cluster_key_problem` says so before anything starts, so
:mod:`streamproc.config` can refuse such a setting without importing the Redis
side.
"""

from __future__ import annotations

from binascii import crc_hqx
from collections.abc import Sequence
from typing import Final

SLOTS: Final = 16384


def key_slot(key: bytes) -> int:
    """Redis Cluster hash slot of ``key``, 0..16383: CRC16 (XMODEM) of the hash tag if any, else the key."""
    start = key.find(b"{")
    if start > -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) % SLOTS


def same_slot(*keys: str) -> bool:
    """True when every key (UTF-8) hashes to one slot."""
    return len({key_slot(k.encode()) for k in keys}) == 1


def cluster_key_problem(streams: Sequence[str]) -> str | None:
    """Why these stream names cannot work on a Redis Cluster, or None if they can."""
    bad = [s for s in streams if not same_slot(s, f"{s}:dlq", f"{s}:dlq:ids", f"{s}:dlq:replayed")]
    if not bad:
        return None
    return (
        f"on a Redis Cluster every stream name needs a hash tag so that its dead-letter stream"
        f" lands in the same slot: {', '.join(bad)} has none. Name streams like `events:{{0}}`"
        " (STREAMPROC_STREAMS='events:{0..7}' makes eight)"
    )
