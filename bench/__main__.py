"""streamproc benchmark: `python -m bench --events 200000 --workers 2`.

Measures the ceiling, the naive worker and streamproc side by side on the same
workload in the same run, and prints ratios (the machines are shared and
noisy: absolute figures move, ratios much less). A fourth figure, the Postgres
bound, applies streamproc's own transactions with nothing else timed: no daemon
exceeds it on the machine. Starts throwaway Redis and
Postgres unless STREAMPROC_REDIS_URL and STREAMPROC_DATABASE_URL are set.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from bench import profile, yardsticks
from bench.bound import postgres_bound
from bench.yardsticks import Run
from streamproc.config import Settings
from streamproc.dev.localservers import local_servers
from streamproc.dev.synth import Generator
from streamproc.postgres.migrate import migrate


@contextlib.contextmanager
def servers(durable: bool = True) -> Iterator[tuple[str, str]]:
    """The servers in STREAMPROC_REDIS_URL and STREAMPROC_DATABASE_URL, else throwaway ones
    (Postgres with its default durability unless ``durable`` is False)."""
    url_r, url_pg = os.environ.get("STREAMPROC_REDIS_URL"), os.environ.get("STREAMPROC_DATABASE_URL")
    if url_r and url_pg:
        yield url_r, url_pg
        return
    with local_servers(durable=durable) as s:
        yield s.redis.url, s.postgres.url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200_000, help="events per streamproc run (default 200000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes for the scaling run (default 2)")
    p.add_argument(
        "--naive-events", type=int, default=None, help="events for the naive worker (default min(events, 20000))"
    )
    p.add_argument("--batch-sizes", default="100,500,1000,5000", help="batch sizes for the sweep and plot")
    p.add_argument(
        "--sweep-events", type=int, default=None, help="events per sweep point (default min(events, 100000))"
    )
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--plot", type=Path, default=None, help="write the throughput-vs-batch-size PNG here")
    p.add_argument("--no-profile", action="store_true", help="skip the per-step CPU profile")
    p.add_argument(
        "--non-durable",
        action="store_true",
        help="throwaway Postgres with fsync, synchronous_commit and full_page_writes off (default: durable)",
    )
    p.add_argument(
        "--latency-rate",
        type=int,
        default=10_000,
        help="offered events/s for the XADD-to-commit latency run, 10 s long (0 skips; default 10000)",
    )
    args = p.parse_args(argv)
    if args.events < 100 or args.workers < 1:
        p.error("--events must be >= 100 and --workers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    naive_n = args.naive_events or min(args.events, 20_000)
    sweep_n = args.sweep_events or min(args.events, 100_000)
    sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    entries = list(Generator(seed=42, days=1, bad_ratio=0.002).entries(args.events))
    results: dict[str, Any] = {"machine": machine(), "events": args.events, "runs": [], "sweep": []}
    results["postgres_durable"] = not args.non_durable
    with servers(not args.non_durable) as (redis_url, database_url), tempfile.TemporaryDirectory() as logdir:
        migrate(database_url, "bench")
        client = redis.Redis.from_url(redis_url)
        env = yardsticks.daemon_env(redis_url, database_url)
        log = Path(logdir)
        tag = secrets.token_hex(3)
        say(f"ceiling on {args.events:,} entries")
        ceiling = yardsticks.ceiling(client, f"bench:{tag}:ceiling", entries)
        say(f"naive worker on {naive_n:,} entries")
        naive = yardsticks.naive(client, database_url, f"bench:{tag}:naive", entries[:naive_n])
        say(f"streamproc, 1 worker, on {args.events:,} entries")
        one = yardsticks.streamproc_run(client, env, f"bench:{tag}:one", entries, 1, 1000, log)
        say(f"streamproc, {args.workers} workers, on {args.events:,} entries")
        many = yardsticks.streamproc_run(client, env, f"bench:{tag}:many", entries, args.workers, 1000, log)
        say(f"postgres bound on {args.events:,} entries")
        bound = postgres_bound(database_url, entries, 1000, threads=Settings().flushers)
        for run in (ceiling, naive, one, many, bound):
            results["runs"].append(row(run, ceiling, naive))
        for size in sizes:
            say(f"sweep: batch size {size} on {sweep_n:,} entries")
            r = yardsticks.streamproc_run(client, env, f"bench:{tag}:b{size}", entries[:sweep_n], 1, size, log)
            results["sweep"].append(
                {"batch_size": size, "events_per_s": round(r.rate), "ratio_to_ceiling": round(r.rate / ceiling.rate, 4)}
            )
        if args.latency_rate:
            lat_entries = entries[: min(args.events, args.latency_rate * 10)]
            say(f"latency at {args.latency_rate:,} events/s offered, {len(lat_entries):,} events")
            results["latency"] = yardsticks.latency(
                client, env, f"bench:{tag}:lat", lat_entries, args.latency_rate, log
            )
        if not args.no_profile:
            say(f"profile on {min(sweep_n, 50_000):,} entries")
            results["profile"] = profile.breakdown(redis_url, database_url, entries[: min(sweep_n, 50_000)])
        client.close()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        from bench.plot import plot_sweep

        plot_sweep(results["sweep"], ceiling.rate, args.plot)
    return 0


def row(run: Run, ceiling: Run, naive: Run) -> dict[str, Any]:
    return {
        "name": run.name,
        "events": run.events,
        "seconds": round(run.seconds, 3),
        "events_per_s": round(run.rate),
        "ratio_to_ceiling": round(run.rate / ceiling.rate, 4),
        "ratio_to_naive": round(run.rate / naive.rate, 2),
        **run.extra,
    }


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def say(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def print_table(results: dict[str, Any]) -> None:
    if not results.get("postgres_durable", True):
        print("\nPostgres NON-DURABLE: fsync, synchronous_commit and full_page_writes off")
    print(f"\n{'yardstick':36} {'events':>9} {'seconds':>8} {'events/s':>10} {'x ceiling':>9} {'x naive':>8}")
    for r in results["runs"]:
        print(
            f"{r['name']:36} {r['events']:>9,} {r['seconds']:>8.2f} {r['events_per_s']:>10,}"
            f" {r['ratio_to_ceiling']:>9.3f} {r['ratio_to_naive']:>8.1f}"
        )
    for r in results["runs"]:
        if "peak_rss_mb" in r:
            print(f"{r['name']}: peak RSS {r['peak_rss_mb']} MB, daemon CPU {r['cpu_seconds']} s")
    if results["sweep"]:
        print(
            "\nbatch size sweep: " + ", ".join(f"{s['batch_size']}: {s['events_per_s']:,}/s" for s in results["sweep"])
        )
    if "latency" in results:
        lat = results["latency"]
        print(
            f"\nlatency XADD -> commit at {lat['offered_per_s']:,}/s offered: p50 {lat['p50_ms']} ms,"
            f" p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['measured']:,} events)"
        )
    if "profile" in results:
        print("\nCPU per event in the daemon (cProfile, synchronous path):")
        for step, us in results["profile"]["us_per_event"].items():
            print(f"  {step:10} {us:7.1f} us")


if __name__ == "__main__":
    sys.exit(main())
