"""``streamproc demo``: the whole pipeline on throwaway servers, in one command."""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamproc.config import load_settings
from streamproc.daemon.run import build_worker
from streamproc.dev.agents import write_country_db
from streamproc.dev.localservers import local_servers
from streamproc.dev.synth import Generator, produce
from streamproc.logs import configure
from streamproc.postgres.migrate import migrate
from streamproc.postgres.session import connect
from streamproc.redis import client as redisclient
from streamproc.reports.render import print_report
from streamproc.reports.report import build_report, sites
from streamproc.reports.uniques import Uniques

DEMO_STREAM = "streamproc-demo:events"
DEMO_SCHEMA = "streamproc_demo"


@contextlib.contextmanager
def _servers(external: bool, console: Console) -> Iterator[tuple[str | None, str | None]]:
    if external:
        yield None, None
        return
    with console.status("starting throwaway Redis and Postgres on loopback..."):
        cm = local_servers()
        servers = cm.__enter__()
    console.print(f"redis    {servers.redis.url}\npostgres {servers.postgres.url}")
    try:
        yield servers.redis.url, servers.postgres.url
    finally:
        cm.__exit__(None, None, None)
        console.print("throwaway servers stopped and removed")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


RAW_SHARE: Final = 0.3  # visitors whose events carry only ua + ip, enriched by the daemon


def _country_db(console: Console) -> str | None:
    """A tiny country database of the demo's made-up addresses (documentation ranges)."""
    try:
        path = write_country_db(Path(tempfile.mkdtemp(prefix="streamproc-demo-")) / "countries.mmdb")
    except ImportError:
        console.print("mmdb-writer is not installed: the demo runs without countries from IP addresses")
        return None
    return str(path)


def run_demo(n: int, seed: int, external: bool, console: Console) -> dict[str, Any]:
    configure("warning")
    with _servers(external, console) as (redis_url, database_url):
        overrides: dict[str, Any] = {
            "streams": DEMO_STREAM,
            "db_schema": DEMO_SCHEMA,
            "consumer": "demo-1",
            "min_idle_ms": 5000,
            "batch_size": 2000,
        }
        if redis_url is not None:
            overrides.update(redis_url=redis_url, database_url=database_url, visitor_secret=secrets.token_hex(16))
        overrides["country_db"] = _country_db(console)
        settings = load_settings(overrides)
        if settings.visitor_secret is None:
            settings = load_settings({**overrides, "visitor_secret": secrets.token_hex(16)})
        migrate(settings.database_url, settings.db_schema, settings.approximate_uniques)
        client = redisclient.connect(settings.redis_url, cluster=settings.redis_cluster, socket_timeout=30)
        gen = Generator(seed=seed, raw_share=RAW_SHARE)
        expected_bad = 0
        with _progress(console) as progress:
            task = progress.add_task("produce", total=n)

            def entries() -> Iterator[Any]:
                nonlocal expected_bad
                for e in gen.entries(n):
                    expected_bad += e.event is None
                    yield e

            started = time.perf_counter()
            produce(client, DEMO_STREAM, entries(), progress=lambda k: progress.advance(task, k))
            produce_s = time.perf_counter() - started
            work = progress.add_task("process", total=n)
            worker = build_worker(settings, drain=True)
            worker.accounting.on_batch = lambda r: progress.advance(work, r.entries)
            started = time.perf_counter()
            try:
                worker.run()
            finally:
                worker.source.close()
                worker.close_sinks()
            process_s = time.perf_counter() - started
        t = worker.totals
        summary: dict[str, Any] = {
            "events_produced": n,
            "counted": t.ok,
            "dead_lettered": t.dead_lettered,
            "duplicates_skipped": t.duplicates,
            "produce_seconds": round(produce_s, 2),
            "process_seconds": round(process_s, 2),
            "events_per_second": round(n / process_s) if process_s else None,
        }
        console.print(
            f"\nprocessed {n:,} entries in {process_s:.1f} s ({summary['events_per_second']:,}/s):"
            f" {t.ok:,} counted, {t.dead_lettered:,} dead-lettered (malformed, see {DEMO_STREAM}:dlq),"
            f" {t.duplicates:,} producer retries skipped\n"
        )
        with connect(settings.database_url, settings.db_schema, "streamproc-demo") as conn:
            conn.begin()
            top = sites(conn)[0]
            first = time.strftime("%Y-%m-%d", time.gmtime(gen.start_ms / 1000))
            last = time.strftime("%Y-%m-%d", time.gmtime(gen.now_ms / 1000))
            import datetime as dt

            first_day, last_day = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
            data = build_report(conn, top, first_day, last_day, Uniques(settings.approximate_uniques))
        print_report(console, data)
        summary["report"] = data
        client.close()
    return summary
