"""Whether Redis keeps the stream across a restart, for ``streamproc check``.

With ``appendonly no`` and no ``save`` points a Redis restart starts empty: the stream, its
consumer group and every pending entry are gone (the daemon then exits 3, see the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.exceptions as rx
from redis.cluster import RedisCluster

from streamproc.redis.client import Client


@dataclass(frozen=True)
class Persistence:
    """``appendonly`` (True/False, None unknown) and the ``save`` points ("" none, None unknown)."""

    appendonly: bool | None
    save: str | None

    @property
    def none(self) -> bool:
        """Known to keep nothing across a restart."""
        return self.appendonly is False and self.save == ""


def persistence(client: Client, streams: Sequence[str]) -> dict[str, Persistence]:
    """Per server holding one of ``streams`` (keyed ``host:port`` on a cluster, else ``""``):
    CONFIG GET appendonly and save, else INFO persistence (``aof_enabled`` only). Raises
    redis-py connection errors."""
    if not isinstance(client, RedisCluster):
        return {"": _persistence(client)}
    out: dict[str, Persistence] = {}
    for stream in streams:
        node = client.get_node_from_key(stream)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if node.name not in out:
            out[node.name] = _persistence(client.get_redis_connection(node))
    return out


def _persistence(node: Client) -> Persistence:
    try:
        config = {_text(k): _text(v) for k, v in (node.config_get("appendonly") | node.config_get("save")).items()}
        return Persistence(config.get("appendonly") == "yes", config.get("save", "").strip())
    except rx.ResponseError:  # NOPERM included: the daemon's own user may not run CONFIG
        pass
    try:
        info = node.info("persistence")
    except rx.ResponseError:
        return Persistence(None, None)
    aof = info.get("aof_enabled")
    return Persistence(None if aof is None else bool(int(aof)), None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def check_line(facts: Persistence) -> tuple[bool, str]:
    """``(ok, detail)`` of the ``redis persistence`` check (not ok: a warning)."""
    if facts.appendonly:
        return True, "appendonly yes"
    if facts.save:
        return True, f"save {facts.save} (snapshots: a restart loses what came after the last one)"
    if facts.none:
        return (
            False,
            "none (appendonly no, no save points): a Redis restart loses the stream, its consumer group"
            " and every pending entry; set appendonly yes (or save points)",
        )
    return (
        False,
        "unknown: this user may run neither CONFIG GET nor INFO (an admin: redis-cli CONFIG GET appendonly save)",
    )
