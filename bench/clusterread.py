"""The price of counting trimmed entries on a Redis Cluster: `python -m bench.clusterread`.

Starts a throwaway cluster of ``--primaries`` primaries, fills ``--shards`` hash-tagged
streams and times, read after read in alternation, the two ways to take ``--count`` new
entries from every shard: one XREADGROUP per stream pipelined per node (what the daemon
did before), and :func:`streamproc.redis.gaps.read_counting_gaps` (a MULTI/EXEC per hash
slot with the XINFO pair that counts entries trimmed before delivery). Prints the median
and the 10th percentile of each, in milliseconds per read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from streamproc.dev.localservers import start_redis_cluster
from streamproc.redis.client import connect
from streamproc.redis.gaps import read_counting_gaps

FIELDS = {"type": "page_view", "site": "example.com", "path": "/a/b/c", "ts": "1700000000000", "visitor": "v" * 20}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.clusterread", description=__doc__)
    p.add_argument("--primaries", type=int, default=3)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--count", type=int, default=100, help="entries per shard per read")
    p.add_argument("--reads", type=int, default=250, help="reads of each kind")
    args = p.parse_args(argv)
    cluster = start_redis_cluster(primaries=args.primaries, replicas=0)
    try:
        client = connect(cluster.url, cluster=True, socket_timeout=10)
        streams = [f"bench:events:{{{i}}}" for i in range(args.shards)]
        for s in streams:
            pipe = client.pipeline(transaction=False)
            for _ in range(args.count * args.reads):
                pipe.xadd(s, FIELDS)  # type: ignore[arg-type]  # str fields are accepted
            pipe.execute()
            client.xgroup_create(s, "pipelined", id="0")
            client.xgroup_create(s, "counted", id="0")

        def pipelined() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for s in streams:
                pipe.xreadgroup("pipelined", "c", {s: ">"}, count=args.count)
            return [part for reply in pipe.execute() for part in (reply or [])]

        def counted() -> list[Any]:
            return read_counting_gaps(client, streams, "counted", "c", args.count)[0]

        kinds: dict[str, Callable[[], list[Any]]] = {"pipelined": pipelined, "counted": counted}
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for i in range(args.reads):
            for name in sorted(kinds, reverse=bool(i % 2)):  # alternate which goes first
                started = time.perf_counter()
                reply = kinds[name]()
                times[name].append(time.perf_counter() - started)
                assert sum(len(entries) for _, entries in reply) == args.count * args.shards
        for name, spans in times.items():
            ms = sorted(t * 1000 for t in spans)
            print(f"{name:>9}: median {statistics.median(ms):.2f} ms, p10 {ms[len(ms) // 10]:.2f} ms per read")
        client.close()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
