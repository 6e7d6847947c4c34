"""What a drained event costs Postgres: `python -m bench.writecost --events 200000`.

For each workload shape (``live``: the synthetic traffic of ``streamproc.dev.synth``,
moving forward in time; ``hard``: a producer ``id`` on every event, mostly new
visitors and sessions, timestamps out of order over two days, 20 sites, 2 000
Zipf-weighted paths) and each uniques mode, one `streamproc run --drain` on a
fresh stream and schema, reporting:

- events/s and the ratio to the ceiling (XREADGROUP + XACK only) of the same shape;
- daemon CPU per event (µs, from ``/proc``), and apart: the CPU spent before ``ready``
  (imports, the user-agent rules compiled at start-up: a fixed cost, seconds) and the
  CPU per event after it (sampled every 50 ms);
- **rows written per event** (``n_tup_ins + n_tup_upd + n_tup_del`` deltas of
  ``pg_stat_user_tables``, partitions summed into their table) and **WAL bytes per
  event** (``pg_current_wal_lsn`` delta; a CHECKPOINT before each run, so every run
  pays its full-page images alike). These two barely move with machine noise: they
  are the primary figures. Per-table rows per event, the share of updates that
  were HOT and the full-page images per 1 000 events (``pg_stat_wal.wal_fpi``: what
  ``wal_compression`` shrinks; ``--wal-compression`` sets it) are in the JSON;
- WAL bytes per event by kind of record (``pg_waldump --stats``: heap inserts, the
  confirmation each ``ON CONFLICT`` insert adds, index entries, index page splits, row
  locks, updates, full-page images; :mod:`bench.walkinds`).

Postgres keeps its default durability (fsync, synchronous_commit, full_page_writes)
unless ``--non-durable``. ``--ab DIR`` runs the streamproc checked out in DIR (its own
migrations, its own daemon) on the same entries right after each run, for a
same-session comparison; ``--repeat`` alternates the pair that many times.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import yardsticks
from bench.walkinds import wal_by_kind
from streamproc.dev.localservers import local_servers
from streamproc.dev.synth import Generator, SynthEntry

SHAPES = ("live", "hard")
MODES = ("exact", "approximate")

_TABLE_STATS = """
SELECT coalesce(pg_partition_root(s.relid), s.relid)::regclass::text AS name,
       sum(s.n_tup_ins), sum(s.n_tup_upd), sum(s.n_tup_del), sum(s.n_tup_hot_upd)
FROM pg_stat_user_tables s WHERE s.schemaname = %s GROUP BY 1
"""


def workload(shape: str, n: int) -> list[SynthEntry]:
    if shape == "live":
        return list(Generator(seed=42, days=1, bad_ratio=0.002).entries(n))
    return list(Generator.hard(seed=43, n=n).entries(n))


def table_stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, tuple[int, int, int, int]]:
    """Per table (partitions summed): rows inserted, updated, deleted, updated HOT."""
    rows = conn.execute(_TABLE_STATS, (schema,)).fetchall()
    return {name.rsplit(".", 1)[-1]: (int(i), int(u), int(d), int(h)) for name, i, u, d, h in rows}


def settled_stats(conn: psycopg.Connection[Any], schema: str) -> dict[str, tuple[int, int, int, int]]:
    """The counters once the exited daemon's backend has reported them (it does on exit)."""
    last = table_stats(conn, schema)
    for _ in range(50):
        time.sleep(0.2)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        now = table_stats(conn, schema)
        if now == last:
            return now
        last = now
    return last


def wal_fpi(conn: psycopg.Connection[Any]) -> int:
    """Full-page images written to the WAL since the server started (``pg_stat_wal``)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT wal_fpi FROM pg_stat_wal").fetchone()
    return int(row[0]) if row else 0


def wal_lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def migrate_with(cwd: Path | None, env: dict[str, str]) -> None:
    """`streamproc migrate` of the checkout in ``cwd`` (this one when None)."""
    res = subprocess.run(
        [sys.executable, "-m", "streamproc", "migrate"], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if res.returncode != 0:
        raise RuntimeError(f"migrate failed in {cwd or '.'}: {res.stdout[-1500:]} {res.stderr[-1500:]}")


def measure(
    client: redis.Redis,
    database_url: str,
    redis_url: str,
    entries: list[SynthEntry],
    mode: str,
    logdir: Path,
    cwd: Path | None = None,
    batch_size: int = 1000,
    backlog_batch_size: int | None = None,
    wal_dir: Path | None = None,
) -> dict[str, Any]:
    """One daemon drain of ``entries`` into a fresh schema; its write cost per event.
    ``backlog_batch_size``: the daemon's setting (None: its default; a checkout older than the
    setting ignores it). ``wal_dir``: the server's ``pg_wal``, to break the WAL down by kind
    of record (:mod:`bench.walkinds`)."""
    tag = secrets.token_hex(3)
    schema = f"wc_{mode[:5]}_{tag}"
    extra = {} if backlog_batch_size is None else {"STREAMPROC_BACKLOG_BATCH_SIZE": str(backlog_batch_size)}
    env = yardsticks.daemon_env(redis_url, database_url, schema, STREAMPROC_UNIQUES=mode, **extra)
    migrate_with(cwd, env)
    stream = f"wc:{tag}"
    yardsticks.load(client, stream, entries)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        before, lsn, fpi = settled_stats(conn, schema), wal_lsn(conn), wal_fpi(conn)
        run = yardsticks.streamproc_run(client, env, stream, None, 1, batch_size, logdir, cwd=cwd)
        end = wal_lsn(conn)
        row = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end, lsn)).fetchone()
        wal = int(row[0]) if row else 0
        after = settled_stats(conn, schema)
        fpi = wal_fpi(conn) - fpi
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    client.delete(stream, f"{stream}:dlq")
    n = run.events
    kinds = wal_by_kind(wal_dir, lsn, end, n) if wal_dir is not None else {}
    per_table: dict[str, float] = {}
    hot_by_table: dict[str, float] = {}
    written = hot = updated = 0
    for table, now in sorted(after.items()):
        was = before.get(table, (0, 0, 0, 0))
        ins, upd, dele, hot_upd = (a - b for a, b in zip(now, was, strict=True))
        if ins + upd + dele:
            per_table[table] = round((ins + upd + dele) / n, 3)
        if upd:
            hot_by_table[table] = round(hot_upd / upd, 3)
        written += ins + upd + dele
        updated += upd
        hot += hot_upd
    return {
        "events": n,
        "seconds": round(run.seconds, 3),
        "events_per_s": round(run.rate),
        "cpu_us_per_event": round(run.extra["cpu_seconds"] / n * 1e6, 1),
        "startup_cpu_seconds": run.extra["startup_cpu_seconds"],
        "cpu_us_per_event_after_ready": round(
            (run.extra["cpu_seconds"] - run.extra["startup_cpu_seconds"]) / n * 1e6, 1
        ),
        "rows_per_event": round(written / n, 3),
        "wal_bytes_per_event": round(wal / n),
        "full_page_images_per_1000_events": round(fpi / n * 1000, 1),
        "hot_update_share": round(hot / updated, 3) if updated else None,
        "rows_per_event_by_table": per_table,
        "wal_per_event_by_kind": kinds,
        "hot_update_share_by_table": hot_by_table,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.writecost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument(
        "--backlog-batch-size",
        type=int,
        default=None,
        help="the daemon's backlog_batch_size (default: its own default; --batch-size turns the growth off)",
    )
    p.add_argument("--ab", type=Path, default=None, help="a checkout whose streamproc runs each case right after")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (alternated with --ab)")
    p.add_argument("--non-durable", action="store_true", help="fsync, synchronous_commit, full_page_writes off")
    p.add_argument(
        "--wal-compression",
        default=None,
        help="the benchmark Postgres's wal_compression (off, pglz, lz4, zstd; default: the server's, off)",
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    if not set(shapes) <= set(SHAPES) or not set(modes) <= set(MODES) or args.events < 100:
        p.error(f"--shapes from {SHAPES}, --modes from {MODES}, --events >= 100")
    out: dict[str, Any] = {
        "events": args.events,
        "durable": not args.non_durable,
        "batch_size": args.batch_size,
        "backlog_batch_size": args.backlog_batch_size,  # None: each daemon's default
        "cases": [],
    }
    with local_servers(durable=not args.non_durable) as s, tempfile.TemporaryDirectory() as logdir:
        client = redis.Redis.from_url(s.redis.url)
        out["wal_compression"] = set_wal_compression(s.postgres.url, args.wal_compression)
        for shape in shapes:
            entries = workload(shape, args.events)
            say(f"{shape}: ceiling on {args.events:,} entries")
            ceiling = yardsticks.ceiling(client, f"wc:ceiling:{shape}", entries)
            client.delete(f"wc:ceiling:{shape}")
            for mode in modes:
                for i in range(args.repeat):
                    for label, cwd in (("this", None), ("ab", args.ab)):
                        if label == "ab" and cwd is None:
                            continue
                        say(f"{shape} / {mode} / {label} ({i + 1}/{args.repeat})")
                        r = measure(
                            client,
                            s.postgres.url,
                            s.redis.url,
                            entries,
                            mode,
                            Path(logdir),
                            cwd,
                            args.batch_size,
                            args.backlog_batch_size,
                            s.postgres.data / "pg_wal",
                        )
                        r.update(shape=shape, mode=mode, code=str(cwd or "this"), run=i + 1)
                        r["ratio_to_ceiling"] = round(r["events_per_s"] / ceiling.rate, 4)
                        r["ceiling_events_per_s"] = round(ceiling.rate)
                        out["cases"].append(r)
        client.close()
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def set_wal_compression(database_url: str, value: str | None) -> str:
    """Set the server's ``wal_compression`` (when ``value``); returns the setting in force."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if value is not None:
            conn.execute(f"ALTER SYSTEM SET wal_compression = '{value}'")  # a bench flag, not user input
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)  # the reload reaches the backends started next
        row = conn.execute("SHOW wal_compression").fetchone()
    return str(row[0]) if row else "unknown"


def say(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


def print_table(out: dict[str, Any]) -> None:
    durability = "durable" if out["durable"] else "NON-DURABLE (fsync, synchronous_commit, full_page_writes off)"
    print(
        f"\nwrite cost per event, Postgres {durability}, wal_compression {out.get('wal_compression', 'off')},"
        f" {out['events']:,} events per run, batch size {out.get('batch_size', 1000):,}, backlog batch size"
        f" {out.get('backlog_batch_size') or 'default'}"
    )
    print(
        f"{'shape':6} {'mode':12} {'code':24} {'events/s':>9} {'x ceil':>7} {'cpu us':>7} {'start s':>7}"
        f" {'run us':>7} {'rows':>6} {'WAL B':>6}"
    )
    for r in out["cases"]:
        print(
            f"{r['shape']:6} {r['mode']:12} {Path(r['code']).name[:24]:24} {r['events_per_s']:>9,}"
            f" {r['ratio_to_ceiling']:>7.3f} {r['cpu_us_per_event']:>7.1f} {r['startup_cpu_seconds']:>7.2f}"
            f" {r['cpu_us_per_event_after_ready']:>7.1f} {r['rows_per_event']:>6.2f}"
            f" {r['wal_bytes_per_event']:>6,}"
        )
        tables = ", ".join(f"{t} {v:.2f}" for t, v in r["rows_per_event_by_table"].items())
        print(f"{'':20} rows/event: {tables}")
        kinds = ", ".join(f"{k} {v['bytes']:.0f}" for k, v in r.get("wal_per_event_by_kind", {}).items())
        if kinds:
            print(f"{'':20} WAL B/event: {kinds}")


if __name__ == "__main__":
    sys.exit(main())
