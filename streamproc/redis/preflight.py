"""What ``streamproc check`` asks Redis: version, the daemon's permissions, groups, eviction.

Permissions are probed as the daemon's own user, without changing anything and
without ``ACL`` rights (which that user lacks by design): Redis checks a
command's ACL before it queues the command in a transaction, so every command
the daemon sends is queued once inside ``MULTI`` — ``QUEUED`` means allowed,
``NOPERM`` means denied — and the transaction is discarded. ``WATCH``/``EXEC``
are probed outside a transaction, where an allowed one answers with a harmless
error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
import redis.exceptions as rx
from redis.cluster import RedisCluster

from streamproc.redis.client import Client
from streamproc.redis.deadletters import dlq_ids_key, dlq_key

PROBE_ID: Final = "0-0"  # an entry id no stream holds: XACK/XCLAIM of it change nothing


def daemon_commands(stream: str, group: str, consumer: str) -> list[tuple[str, ...]]:
    """Every command the daemon sends for ``stream``, in a form safe to queue (never executed)."""
    dlq, ids = dlq_key(stream), dlq_ids_key(stream)
    return [
        ("XREADGROUP", "GROUP", group, consumer, "COUNT", "1", "STREAMS", stream, ">"),
        ("XCLAIM", stream, group, consumer, "0", PROBE_ID, "JUSTID"),
        ("XAUTOCLAIM", stream, group, consumer, "3600000", PROBE_ID, "COUNT", "1", "JUSTID"),
        ("XPENDING", stream, group, "-", "+", "1", consumer),
        ("XACK", stream, group, PROBE_ID),
        ("XINFO", "STREAM", stream),
        ("XINFO", "GROUPS", stream),
        ("XINFO", "CONSUMERS", stream, group),
        ("XLEN", stream),
        ("XRANGE", stream, "-", "+", "COUNT", "1"),
        ("XADD", dlq, "*", "_dlq_probe", "1"),
        ("HMGET", ids, PROBE_ID),
        ("HSET", ids, PROBE_ID, "1"),
    ]


@dataclass
class Permissions:
    """Denied commands (``"XADD events:dlq"``) and the NOPERM text of each."""

    denied: dict[str, str] = field(default_factory=dict)
    checked: int = 0


def _node_client(client: Client, stream: str) -> redis.Redis:
    if isinstance(client, RedisCluster):
        return client.get_redis_connection(client.get_node_from_key(stream))  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return client


def _reply(conn: Any, *args: str) -> Any:
    conn.send_command(*args)
    try:
        return conn.read_response()
    except rx.ResponseError as exc:
        return exc


def probe_permissions(client: Client, streams: Sequence[str], group: str, consumer: str) -> Permissions:
    """Which of the daemon's commands its user may not run, on each stream's node.

    Changes nothing (``MULTI`` ... ``DISCARD``). Raises redis-py connection errors as they come.
    """
    result = Permissions()
    for stream in streams:
        node = _node_client(client, stream)
        conn = node.connection_pool.get_connection()
        try:
            _probe_stream(conn, stream, group, consumer, result)
        finally:
            node.connection_pool.release(conn)
    return result


def _label(args: Sequence[str]) -> str:
    """``XINFO GROUPS events``, ``XADD events:dlq``, ``PING``: the command and the key it names."""
    if args[0] == "XINFO":
        return f"XINFO {args[1]} {args[2]}"
    if args[0] == "XREADGROUP":
        return f"XREADGROUP {args[7]}"
    return " ".join(args[:2]) if args[0] not in ("PING", "UNWATCH", "EXEC", "DISCARD", "MULTI") else args[0]


def _probe_stream(conn: Any, stream: str, group: str, consumer: str, result: Permissions) -> None:
    def note(args: Sequence[str], reply: Any) -> None:
        result.checked += 1
        if isinstance(reply, rx.NoPermissionError):
            result.denied[_label(args)] = str(reply)

    outside = [("PING",), ("WATCH", dlq_ids_key(stream)), ("UNWATCH",), ("EXEC",), ("DISCARD",)]
    for args in outside:
        note(args, _reply(conn, *args))
    multi = _reply(conn, "MULTI")
    note(("MULTI",), multi)
    if isinstance(multi, Exception):
        return
    try:
        for args in daemon_commands(stream, group, consumer):
            note(args, _reply(conn, *args))
    finally:
        _reply(conn, "DISCARD")


@dataclass
class ServerFacts:
    version: str | None
    mode: str | None
    maxmemory_policy: str | None  # None: this user may read neither CONFIG nor INFO


def server_facts(client: Client, stream: str) -> ServerFacts:
    """Version (HELLO, which every user may run) and ``maxmemory-policy`` (CONFIG GET, else
    INFO memory; None when the user may run neither). Raises redis-py connection errors."""
    node = _node_client(client, stream)
    conn = node.connection_pool.get_connection()
    try:
        hello = _reply(conn, "HELLO")
        if isinstance(hello, list):  # RESP2: a flat key/value list
            hello = dict(zip(hello[::2], hello[1::2], strict=False))
        facts = ServerFacts(None, None, None)
        if isinstance(hello, dict):
            facts.version = _text(hello.get(b"version", hello.get("version")))
            facts.mode = _text(hello.get(b"mode", hello.get("mode")))
        config = _reply(conn, "CONFIG", "GET", "maxmemory-policy")
        if isinstance(config, dict):
            facts.maxmemory_policy = _text(next(iter(config.values()), None))
        elif isinstance(config, list) and len(config) == 2:
            facts.maxmemory_policy = _text(config[1])
        else:
            info = _reply(conn, "INFO", "memory")
            if isinstance(info, bytes | str):
                for line in _text(info).splitlines():
                    if line.startswith("maxmemory_policy:"):
                        facts.maxmemory_policy = line.partition(":")[2].strip()
        return facts
    finally:
        node.connection_pool.release(conn)


def server_facts_by_node(client: Client, streams: Sequence[str]) -> dict[str, ServerFacts]:
    """:func:`server_facts` of every server holding one of ``streams``, keyed ``host:port``: on a
    Redis Cluster each primary serving one of them (version and maxmemory-policy are per node),
    otherwise the one server, keyed ``""``. Raises redis-py connection errors."""
    if not isinstance(client, RedisCluster):
        return {"": server_facts(client, streams[0])}
    out: dict[str, ServerFacts] = {}
    for stream in streams:
        name = client.get_node_from_key(stream).name  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        if name not in out:
            out[name] = server_facts(client, stream)
    return out


def group_presence(client: Client, streams: Sequence[str], group: str) -> dict[str, str]:
    """Stream -> ``"ok"``, ``"no stream"``, ``"no group"`` or ``"denied"`` (the user may not run
    XINFO GROUPS on it). Raises redis-py connection errors."""
    out = {}
    for stream in streams:
        try:
            groups = client.xinfo_groups(stream)
        except rx.NoPermissionError:
            out[stream] = "denied"
            continue
        except rx.ResponseError as exc:
            if "no such key" in str(exc).lower():
                out[stream] = "no stream"
                continue
            raise
        names = {_text(g["name"]) for g in groups}
        out[stream] = "ok" if group in names else "no group"
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
