"""Exact against approximate uniques on one workload: `python -m bench.uniques`.

Runs the daemon twice over the same entries, once per mode, each into its own
schema, then compares every unique figure the reports show (visitors and
sessions per site and day and over the whole range, visitors of each site's
top paths and top dimension values) and the space the unique tables take.
Throughput of the two runs is reported as a ratio (same machine, same run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.__main__ import servers
from bench.yardsticks import daemon_env, streamproc_run
from streamproc.core import rollups as R
from streamproc.dev.synth import Generator
from streamproc.postgres.migrate import migrate
from streamproc.postgres.session import connect
from streamproc.reports.uniques import Uniques

EXACT_TABLES = tuple(r.table for r in R.EXACT_UNIQUES)
SKETCH_TABLES = tuple(r.table for r in R.APPROXIMATE_UNIQUES)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.uniques", description=__doc__)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--visitors", type=int, default=100_000, help="distinct visitors in the workload")
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    entries = list(Generator(seed=11, days=args.days, bad_ratio=0.002, visitors=args.visitors).entries(args.events))
    out: dict[str, Any] = {"events": args.events, "visitors": args.visitors, "days": args.days, "runs": {}}
    out["batch_size"] = args.batch_size
    with servers() as (redis_url, database_url), tempfile.TemporaryDirectory() as logdir:
        client = redis.Redis.from_url(redis_url)
        secret = secrets.token_hex(16)  # one for both modes: the same hashed visitors
        tag = secrets.token_hex(3)
        for mode in ("exact", "approximate"):
            schema = f"bench_{mode}_{tag}"
            migrate(database_url, schema, approximate=mode == "approximate")
            env = daemon_env(redis_url, database_url, schema, secret, STREAMPROC_UNIQUES=mode)
            print(f"streamproc with {mode} uniques on {args.events:,} events", file=sys.stderr)
            run = streamproc_run(client, env, f"bench:{tag}:{mode}", entries, 1, args.batch_size, Path(logdir))
            tables = EXACT_TABLES if mode == "exact" else SKETCH_TABLES
            out["runs"][mode] = {
                "events_per_s": round(run.rate),
                "schema": schema,
                **space(database_url, schema, tables),
            }
        client.close()
        out["throughput_ratio"] = round(
            out["runs"]["approximate"]["events_per_s"] / out["runs"]["exact"]["events_per_s"], 3
        )
        out["errors"] = compare(database_url, out["runs"]["exact"]["schema"], out["runs"]["approximate"]["schema"])
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


def space(database_url: str, schema: str, tables: tuple[str, ...]) -> dict[str, int]:
    """Rows and bytes (all partitions, indexes included) of the unique tables."""
    rows = size = 0
    with connect(database_url, schema) as conn:
        conn.begin()
        for t in tables:
            rows += _int(conn, f"SELECT count(*) FROM {t}", ())
            size += _int(
                conn,
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_inherits i"
                " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                (t,),
            )
    return {"unique_rows": rows, "unique_bytes": size}


def _int(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(query.encode(), params).fetchone()
    return int(row[0]) if row else 0


def _column(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return [row[0] for row in conn.execute(query.encode(), params).fetchall()]


def compare(database_url: str, exact_schema: str, approx_schema: str) -> dict[str, Any]:
    """Relative error of every approximate figure against the exact one, by kind of figure."""
    exact, approx = Uniques(False), Uniques(True)
    errors: dict[str, list[float]] = {
        k: []
        for k in (
            "site_day_visitors",
            "site_range_visitors",
            "site_range_sessions",
            "path_visitors",
            "dimension_value_visitors",
        )
    }
    top_paths = "SELECT path FROM pageviews_daily WHERE site = %s GROUP BY path ORDER BY sum(views) DESC LIMIT 20"
    top_values = (
        "SELECT value FROM dimensions_daily WHERE site = %s AND dimension = %s"
        " GROUP BY value ORDER BY sum(views) DESC LIMIT 10"
    )
    with (
        connect(database_url, exact_schema) as ce,
        connect(database_url, approx_schema) as ca,
    ):
        ce.begin()
        ca.begin()

        def total(kind: str, what: str, site: str, days: list[dt.date]) -> None:
            add(errors[kind], exact.total(ce, what, site, days), approx.total(ca, what, site, days))

        days: list[dt.date] = _column(ce, "SELECT DISTINCT day FROM pageviews_daily ORDER BY 1")
        for site in _column(ce, "SELECT DISTINCT site FROM pageviews_daily ORDER BY 1"):
            for day in days:
                total("site_day_visitors", "visitors", site, [day])
            total("site_range_visitors", "visitors", site, days)
            total("site_range_sessions", "sessions", site, days)
            paths = _column(ce, top_paths, (site,))
            want, got = exact.by_path(ce, site, days, paths), approx.by_path(ca, site, days, paths)
            for path in paths:
                add(errors["path_visitors"], want.get(path, 0), got.get(path, 0))
            for dim in R.DIMENSION_NAMES:
                values = _column(ce, top_values, (site, dim))
                want, got = exact.by_value(ce, site, days, dim, values), approx.by_value(ca, site, days, dim, values)
                for v in values:
                    add(errors["dimension_value_visitors"], want.get(v, 0), got.get(v, 0))
    return {
        kind: {
            "figures": len(errs),
            "mean_abs_rel_error": round(statistics.fmean(errs), 4) if errs else None,
            "max_abs_rel_error": round(max(errs), 4) if errs else None,
        }
        for kind, errs in errors.items()
    }


def add(errs: list[float], want: int, got: int) -> None:
    if want:
        errs.append(abs(got - want) / want)


def report(out: dict[str, Any]) -> None:
    ex, ap = out["runs"]["exact"], out["runs"]["approximate"]
    print(
        f"{out['events']:,} events, {out['visitors']:,} visitors in the workload, {out['days']} days,"
        f" batch size {out['batch_size']:,}"
    )
    print(f"{'mode':<12} {'events/s':>10} {'unique rows':>12} {'unique MB':>10}")
    for name, r in (("exact", ex), ("approximate", ap)):
        print(f"{name:<12} {r['events_per_s']:>10,} {r['unique_rows']:>12,} {r['unique_bytes'] / 2**20:>10.1f}")
    print(f"throughput approximate / exact: {out['throughput_ratio']:.2f}")
    print(f"{'figure':<26} {'n':>5} {'mean |err|':>11} {'max |err|':>10}")
    for kind, e in out["errors"].items():
        if e["figures"]:
            print(f"{kind:<26} {e['figures']:>5} {e['mean_abs_rel_error']:>10.2%} {e['max_abs_rel_error']:>10.2%}")


if __name__ == "__main__":
    sys.exit(main())
