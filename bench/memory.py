"""Daemon memory against the length of the stream: `python -m bench.memory --events 100000,1000000`.

For each size, fresh entries are produced straight from the generator (never
held in a list, so 5 000 000 fit) and one daemon drains them; its peak RSS is
sampled every 50 ms from /proc. Flat RSS means the daemon holds a bounded
number of batches whatever the backlog.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.__main__ import servers
from bench.yardsticks import GROUP, daemon_env, streamproc_run
from streamproc.dev.synth import Generator, produce
from streamproc.postgres.migrate import migrate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    p.add_argument("--events", default="100000,1000000", help="comma-separated stream lengths to drain")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.events.split(",") if x.strip()]
    rows: list[dict[str, Any]] = []
    with servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as logdir:
        migrate(database_url, "bench")
        client = redis.Redis.from_url(redis_url)
        env = daemon_env(redis_url, database_url)
        tag = secrets.token_hex(3)
        for n in sizes:
            stream = f"bench:{tag}:mem{n}"
            print(f"producing {n:,} entries", file=sys.stderr)
            produce(client, stream, Generator(seed=n, days=1, bad_ratio=0.002).entries(n), chunk=5000)
            client.xgroup_create(stream, GROUP, id="0")
            print(f"draining {n:,} entries", file=sys.stderr)
            run = streamproc_run(client, env, stream, None, 1, 1000, Path(logdir))
            client.delete(stream)  # give Redis its memory back before the next size
            rows.append(
                {
                    "events": n,
                    "peak_rss_mb": run.extra["peak_rss_mb"],
                    "events_per_s": round(run.rate),
                    "cpu_us_per_event": round(run.extra["cpu_seconds"] / n * 1e6, 1),
                }
            )
        client.close()
    print(f"{'events':>10} {'peak RSS MB':>12} {'events/s':>9} {'CPU us/event':>13}")
    for r in rows:
        print(f"{r['events']:>10,} {r['peak_rss_mb']:>12.1f} {r['events_per_s']:>9,} {r['cpu_us_per_event']:>13.1f}")
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"] - 1
        print(f"peak RSS from {rows[0]['events']:,} to {rows[-1]['events']:,} events: {growth:+.1%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
