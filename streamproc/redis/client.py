"""One way to open a Redis client, standalone or Redis Cluster.

With ``redis_cluster = true`` the daemon and the CLI use redis-py's cluster
client: it learns the slot map from any seed node, follows MOVED/ASK
redirections and refreshes the map after a failover. Two Redis Cluster rules
shape the rest of the code:

- a command or script may only touch keys of one hash slot, so each stream is
  read with its own XREADGROUP (pipelined per node), and a
  stream's dead-letter keys (``<stream>:dlq``, ``<stream>:dlq:replayed``) must
  hash to the stream's slot — true when the name carries a hash tag, e.g.
  ``events:{0}``; :func:`streamproc.core.keys.cluster_key_problem` says so before anything starts;
- scripts cannot be pipelined, so :func:`run_script` calls them one by one on
  a cluster and in one pipeline otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

Client: TypeAlias = redis.Redis | RedisCluster

# Cluster-only failures that mean "not reachable right now" (a failover in progress,
# slots briefly uncovered): retried like a connection error.
CLUSTER_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ClusterError,
)


def connect(url: str, *, cluster: bool, socket_timeout: float | None, **kwargs: Any) -> Client:
    """A client for ``url``; with ``cluster`` the URL names any one seed node of the cluster."""
    if cluster:
        return RedisCluster.from_url(
            _without_db(url), socket_timeout=socket_timeout, socket_connect_timeout=5, **kwargs
        )
    return redis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=5, **kwargs)


def _without_db(url: str) -> str:
    """Redis Cluster has only database 0: ``redis://h:p/0`` -> ``redis://h:p``."""
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    host, slash, db = rest.partition("/")
    if slash and db not in ("", "0"):
        raise ValueError(f"Redis Cluster has only database 0, the URL asks for database {db}")
    return f"{scheme}://{host}{sep}{query}"


def moved_hint(exc: Exception) -> str | None:
    """A standalone client talking to a cluster node gets MOVED replies: say what to change."""
    if isinstance(exc, redis.exceptions.AskError) or str(exc).startswith("MOVED"):
        return (
            f"Redis answered MOVED {exc}: the server is a Redis Cluster node; set redis_cluster = true"
            " (STREAMPROC_REDIS_CLUSTER=1) and name any node as the seed in the Redis URL"
        )
    return None


def cross_slot(exc: Exception) -> bool:
    """A command over keys of several slots: a naming mistake, not an outage."""
    text = str(exc)
    return "same key slot" in text or "CROSSSLOT" in text


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def run_script(client: Client, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` once per (keys, args): in one pipeline, or one by one on a cluster."""
    if is_cluster(client):
        return [script(keys=list(keys), args=list(args)) for keys, args in calls]
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        script(keys=list(keys), args=list(args), client=pipe)
    return list(pipe.execute())
