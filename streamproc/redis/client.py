"""One way to open a Redis client: standalone, Redis Sentinel or Redis Cluster.

The URL is checked first (:mod:`streamproc.redis.url`): a malformed one, or one
whose options would override the daemon's own timeouts, is a ConfigError
(exit 2) before any connection. The client never retries on its own: the
daemon's backoff does, counted in its metrics (redis-py's default retries
would resend an XADD whose reply timed out, and hide outages).

With a ``redis+sentinel://`` URL the client asks the sentinels for the
primary of the service on every (re)connection; after a failover the old
primary's READONLY reply or a closed connection makes the next attempt
connect to the new primary.

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
from contextlib import suppress
from typing import Any, Final, TypeAlias

import redis
import redis.exceptions as rx
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry
from redis.sentinel import Sentinel

from streamproc.redis.url import parse_redis_url

CONNECT_TIMEOUT_S: Final = 5.0
SENTINEL_TIMEOUT_S: Final = 5.0  # one sentinel query; a dead sentinel is skipped after this

Client: TypeAlias = redis.Redis | RedisCluster


def connect(url: str, *, cluster: bool, socket_timeout: float | None, **kwargs: Any) -> Client:
    """A client for ``url``; with ``cluster`` the URL names any one seed node of the cluster.

    ``socket_timeout`` in seconds (None: wait forever). Raises ConfigError (exit 2) for a
    URL the daemon cannot use; connects lazily (a cluster client connects at once).
    """
    target = parse_redis_url(url, cluster=cluster)
    if cluster:
        return RedisCluster.from_url(
            _without_db(url), socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT_S, **kwargs
        )
    own: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
        **kwargs,
    }
    if target.is_sentinel:
        sentinel_kwargs = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "retry": Retry(NoBackoff(), 0),
            **target.sentinel_kwargs,
        }
        # redis-py leaves the Sentinel API untyped; master_for returns a redis.Redis.
        sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        master: redis.Redis = sentinels.master_for(target.service, **target.kwargs, **own)  # type: ignore[no-untyped-call]
        return master
    return redis.Redis(**target.kwargs, **own)


def _without_db(url: str) -> str:
    """Redis Cluster has only database 0: ``redis://h:p/0`` -> ``redis://h:p``."""
    head, sep, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    host, slash, db = rest.partition("/")
    if slash and db not in ("", "0"):
        raise ValueError(f"Redis Cluster has only database 0, the URL asks for database {db}")
    return f"{scheme}://{host}{sep}{query}"


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def refresh_slot_map(client: Client) -> None:
    """Ask a cluster for its slot map again (CLUSTER SLOTS); nothing on a single Redis.

    redis-py patches its map after a MOVED to a single command, but not after one inside a
    MULTI/EXEC, nor after it gave up following redirects (``TTL exhausted``). Raises nothing:
    if the cluster does not answer, the caller's retry meets the same condition and says so.
    """
    if isinstance(client, RedisCluster):
        with suppress(rx.RedisError, rx.RedisClusterException):
            client.nodes_manager.initialize()


def run_script(client: Client, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]) -> list[Any]:
    """Run ``script`` once per (keys, args): in one pipeline, or one by one on a cluster."""
    if is_cluster(client):
        return [script(keys=list(keys), args=list(args)) for keys, args in calls]
    pipe = client.pipeline(transaction=False)
    for keys, args in calls:
        script(keys=list(keys), args=list(args), client=pipe)
    return list(pipe.execute())
