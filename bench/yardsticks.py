"""The three yardsticks, measured on the same workload in the same run.

1. ceiling: a redis-py (hiredis) consumer that only does XREADGROUP + XACK;
2. naive: the usual worker — one Postgres transaction per event;
3. streamproc: real `streamproc run --drain` processes, full pipeline.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from streamproc.core.entryid import split_entry_id
from streamproc.dev.synth import SynthEntry, produce

GROUP = "bench"


def daemon_env(
    redis_url: str, database_url: str, schema: str = "bench", secret: str | None = None, **extra: str
) -> dict[str, str]:
    """Environment of a benchmarked daemon: the caller's without its own STREAMPROC_ settings,
    these servers and schema, a visitor secret (fresh unless given), then ``extra``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")},
        "STREAMPROC_REDIS_URL": redis_url,
        "STREAMPROC_DATABASE_URL": database_url,
        "STREAMPROC_DB_SCHEMA": schema,
        "STREAMPROC_VISITOR_SECRET": secret or secrets.token_hex(16),
        **extra,
    }


@dataclass
class Run:
    name: str
    events: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def load(client: redis.Redis, stream: str, entries: list[SynthEntry]) -> None:
    client.delete(stream, f"{stream}:dlq")
    produce(client, stream, entries, chunk=5000)
    client.xgroup_create(stream, GROUP, id="0")


def ceiling(client: redis.Redis, stream: str, entries: list[SynthEntry], count: int = 1000) -> Run:
    """Drain the stream doing nothing but XREADGROUP COUNT n + XACK."""
    load(client, stream, entries)
    n = 0
    started = time.perf_counter()
    while True:
        reply: Any = client.xreadgroup(GROUP, "ceiling", {stream: ">"}, count=count)
        if not reply:
            break
        ids = [eid for eid, _ in reply[0][1]]
        client.xack(stream, GROUP, *ids)
        n += len(ids)
    return Run("ceiling (XREADGROUP + XACK)", n, time.perf_counter() - started, {"count": count})


NAIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_events (entry_id text PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS naive_daily (site text, day date, events bigint, PRIMARY KEY (site, day));
CREATE TABLE IF NOT EXISTS naive_paths (site text, day date, path text, views bigint, PRIMARY KEY (site, day, path));
CREATE TABLE IF NOT EXISTS naive_visitors (site text, day date, visitor text, PRIMARY KEY (site, day, visitor));
"""


def naive(client: redis.Redis, database_url: str, stream: str, entries: list[SynthEntry]) -> Run:
    """One transaction per event: raw insert, daily total, path count, visitor row, then XACK."""
    load(client, stream, entries)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS naive")
        conn.execute("SET search_path = naive")
        conn.execute(NAIVE_SCHEMA)
        n = 0
        started = time.perf_counter()
        while True:
            reply: Any = client.xreadgroup(GROUP, "naive", {stream: ">"}, count=100)
            if not reply:
                break
            for eid, fields in reply[0][1]:
                _naive_one(conn, eid.decode(), fields)
                client.xack(stream, GROUP, eid)
                n += 1
        return Run("naive worker (1 tx per event)", n, time.perf_counter() - started)


def _naive_one(conn: psycopg.Connection[Any], eid: str, fields: dict[bytes, bytes]) -> None:
    raw = fields.get(b"event")
    try:
        event = json.loads(raw) if raw is not None else {k.decode(): v.decode() for k, v in fields.items()}
        site, ts = str(event["site"]), event["ts"]
        day = time.strftime("%Y-%m-%d", time.gmtime(int(ts) / 1000)) if str(ts).isdigit() else str(ts)[:10]
    except (ValueError, KeyError, TypeError):
        return  # the naive worker drops what it cannot parse
    with conn.transaction():
        cur = conn.execute("INSERT INTO naive_events VALUES (%s, %s) ON CONFLICT DO NOTHING", (eid, json.dumps(event)))
        if cur.rowcount == 0:
            return
        conn.execute(
            "INSERT INTO naive_daily VALUES (%s, %s, 1) ON CONFLICT (site, day)"
            " DO UPDATE SET events = naive_daily.events + 1",
            (site, day),
        )
        if event.get("type") == "page_view":
            conn.execute(
                "INSERT INTO naive_paths VALUES (%s, %s, %s, 1) ON CONFLICT (site, day, path)"
                " DO UPDATE SET views = naive_paths.views + 1",
                (site, day, event.get("path", "")),
            )
            if event.get("visitor"):
                conn.execute(
                    "INSERT INTO naive_visitors VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (site, day, event["visitor"]),
                )


def _proc_sample(pid: int) -> tuple[int, float] | None:
    """(RSS bytes, CPU seconds) of a running process."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    rss = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
    if not rss:
        return None  # exited, not yet reaped
    rss_kb = rss[0]
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kb * 1024, cpu


def streamproc_run(
    client: redis.Redis,
    env: dict[str, str],
    stream: str,
    entries: list[SynthEntry] | None,
    workers: int = 1,
    batch_size: int = 1000,
    logdir: Path | None = None,
    cwd: Path | None = None,
) -> Run:
    """Real daemon processes with `--drain`; timed from the first `ready` to the last exit.
    ``cwd``: run the streamproc found there (another checkout, for an A/B) instead of this one."""
    if entries is not None:
        load(client, stream, entries)
    procs = []
    for i in range(workers):
        penv = {
            **env,
            "STREAMPROC_STREAMS": stream,
            "STREAMPROC_GROUP": GROUP,
            "STREAMPROC_CONSUMER": f"w{i}",
            "STREAMPROC_BATCH_SIZE": str(batch_size),
            "STREAMPROC_METRICS_PORT": "0",
            "STREAMPROC_LOG_LEVEL": "info",
        }
        log = (logdir or Path("/tmp")) / f"bench-{stream.replace(':', '_')}-{i}.log"
        with open(log, "wb") as fh:
            procs.append(
                (
                    subprocess.Popen(
                        [sys.executable, "-m", "streamproc", "run", "--drain"],
                        env=penv,
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        cwd=cwd,
                    ),
                    log,
                )
            )
    peak_rss, cpu_by_pid = 0, {p.pid: 0.0 for p, _ in procs}
    ready_cpu: dict[int, float] = {}  # CPU seconds when `ready` was first seen (start-up: imports, rule loading)
    while any(p.poll() is None for p, _ in procs):
        for p, log in procs:
            sample = _proc_sample(p.pid)
            if sample:
                peak_rss = max(peak_rss, sample[0])
                cpu_by_pid[p.pid] = max(cpu_by_pid[p.pid], sample[1])
                if p.pid not in ready_cpu and _logged(log, "ready"):
                    ready_cpu[p.pid] = sample[1]
        time.sleep(0.05)
    cpu = sum(cpu_by_pid.values())
    startup_cpu = sum(ready_cpu.values())
    starts, ends, counted = [], [], 0
    for p, log in procs:
        if p.returncode != 0:
            raise RuntimeError(f"streamproc exited {p.returncode}: {log.read_text()[-2000:]}")
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        starts.append(_ts(next(x for x in lines if x["event"] == "ready")))
        drained = next(x for x in lines if x["event"] == "drained")
        ends.append(_ts(drained))
        counted += drained["ok"] + drained["dead_lettered"] + drained["duplicates"]
    seconds = max(ends) - min(starts)
    name = f"streamproc run, {workers} worker{'s' if workers > 1 else ''}"
    return Run(
        name,
        counted,
        seconds,
        {
            "peak_rss_mb": round(peak_rss / 2**20, 1),
            "cpu_seconds": round(cpu, 2),
            "startup_cpu_seconds": round(startup_cpu, 2),
            "batch_size": batch_size,
            "workers": workers,
        },
    )


def _logged(log: Path, event: str) -> bool:
    """Whether the daemon's JSON log has a line with this ``event`` yet."""
    try:
        text = log.read_text()
    except OSError:
        return False
    return f'"{event}"' in text and any(
        json.loads(x).get("event") == event for x in text.splitlines() if x.startswith("{") and x.endswith("}")
    )


def _ts(line: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> None:
    """Wait for the daemon's ``ready`` line; raises RuntimeError if it exits or never says it."""
    deadline = time.monotonic() + timeout_s
    while '"event": "ready"' not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)


def latency(
    client: redis.Redis,
    env: dict[str, str],
    stream: str,
    entries: list[SynthEntry],
    rate: int,
    logdir: Path,
) -> dict[str, Any]:
    """Offer ``rate`` events/s to a running daemon; per entry, time from XADD to the end of
    the batch that committed it (the batch's log line, written right after COMMIT + XACK)."""
    import signal
    import threading

    client.delete(stream)
    client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    penv = {
        **env,
        "STREAMPROC_STREAMS": stream,
        "STREAMPROC_GROUP": GROUP,
        "STREAMPROC_CONSUMER": "lat",
        "STREAMPROC_METRICS_PORT": "0",
        "STREAMPROC_LOG_LEVEL": "info",
        "STREAMPROC_BLOCK_MS": "1000",
    }
    log = logdir / f"latency-{stream.replace(':', '_')}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamproc", "run"], env=penv, stdout=fh, stderr=subprocess.STDOUT
        )
    wait_ready(proc, log)  # start-up (seconds of rule loading) is not part of any figure
    added: list[bytes] = []
    tick_s, per_tick = 0.01, max(1, rate // 100)

    def offer() -> None:
        start = time.perf_counter()
        for i in range(0, len(entries), per_tick):
            pipe = client.pipeline(transaction=False)
            for e in entries[i : i + per_tick]:
                pipe.xadd(stream, e.fields)  # type: ignore[arg-type]  # str fields are accepted
            added.extend(pipe.execute())
            delay = start + (i // per_tick + 1) * tick_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    producer = threading.Thread(target=offer)
    producer.start()
    producer.join()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        g = next(x for x in client.xinfo_groups(stream) if x["name"] in (GROUP, GROUP.encode()))
        if g["pending"] == 0 and g.get("lag") == 0:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    batches = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    batches = [b for b in batches if b.get("event") == "batch" and "first_id" in b]
    ends = sorted((split_entry_id(b["first_id"]), split_entry_id(b["last_id"]), _ts(b)) for b in batches)
    lat: list[float] = []
    for eid in added:
        key = split_entry_id(eid)
        for lo, hi, t in ends:
            if lo <= key <= hi:
                lat.append(t * 1000 - key[0])
                break
    lat.sort()
    if not lat:
        raise RuntimeError(f"no committed batch found in {log}")

    def pick(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1)

    return {
        "offered_per_s": rate,
        "events": len(added),
        "measured": len(lat),
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": round(lat[-1], 1),
    }
