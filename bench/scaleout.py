"""Simulated scale-out on one machine: `python -m bench.scaleout --shards 8 --workers 4`.

Producers spread events over hash-tagged shards `events:{0..N-1}`; K daemons in
one consumer group read all shards. Reports throughput and the group's lag
sampled while it drains. With ``--cluster P`` the shards live on a throwaway
Redis Cluster of P primaries (hash tags spread them over the nodes). On a
2-core machine Redis, Postgres and every worker share the cores: the figures
show coordination overhead, not capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import servers
from bench.yardsticks import GROUP, daemon_env
from streamproc.dev.localservers import start_redis_cluster
from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate
from streamproc.redis.client import connect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cluster", type=int, default=0, metavar="P", help="put the shards on a P-primary Redis Cluster")
    args = p.parse_args(argv)
    import subprocess

    entries = list(Generator(seed=7, days=1, bad_ratio=0.002).entries(args.events))
    cluster = start_redis_cluster(primaries=args.cluster, replicas=0) if args.cluster else None
    stack = contextlib.ExitStack()
    if cluster is not None:
        stack.callback(cluster.stop)
    with stack, servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as logdir:
        if cluster is not None:
            redis_url = cluster.url
        migrate(database_url, "bench")
        client = connect(redis_url, cluster=cluster is not None, socket_timeout=30)
        tag = secrets.token_hex(3)
        shards = [f"bench:{tag}:events:{{{i}}}" for i in range(args.shards)]
        for i, shard in enumerate(shards):
            produce(client, shard, entries[i :: args.shards], chunk=5000)
            client.xgroup_create(shard, GROUP, id="0")
        env = daemon_env(
            redis_url,
            database_url,
            STREAMPROC_REDIS_CLUSTER="1" if cluster else "0",
            STREAMPROC_STREAMS=f"bench:{tag}:events:{{0..{args.shards - 1}}}",
            STREAMPROC_GROUP=GROUP,
            STREAMPROC_METRICS_PORT="0",
            STREAMPROC_BATCH_SIZE="500",
        )
        started = time.perf_counter()
        procs = []
        for w in range(args.workers):
            with open(Path(logdir) / f"w{w}.log", "wb") as fh:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "streamproc", "run", "--drain"],
                        env={**env, "STREAMPROC_CONSUMER": f"w{w}"},
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                    )
                )
        samples: list[dict[str, Any]] = []
        while any(proc.poll() is None for proc in procs):
            lag = sum(int(g.get("lag") or 0) for s in shards for g in client.xinfo_groups(s))
            pending = sum(int(g["pending"]) for s in shards for g in client.xinfo_groups(s))
            samples.append({"t": round(time.perf_counter() - started, 1), "lag": lag, "pending": pending})
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        codes = [proc.returncode for proc in procs]
        client.close()
    result = {
        "shards": args.shards,
        "workers": args.workers,
        "redis_cluster_primaries": args.cluster,
        "events": args.events,
        "seconds": round(seconds, 2),
        "events_per_s": round(args.events / seconds),
        "exit_codes": codes,
        "lag_samples": samples[:: max(1, len(samples) // 12)],
    }
    print(
        f"{args.shards} shards x {args.workers} workers{f' on a {args.cluster}-primary cluster' if cluster else ''}:"
        f" {args.events:,} events in {seconds:.1f} s"
        f" = {args.events / seconds:,.0f}/s; exit codes {codes}"
    )
    print("lag while draining: " + ", ".join(f"{s['t']}s:{s['lag']:,}" for s in result["lag_samples"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
