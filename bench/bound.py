"""The Postgres bound: streamproc's transactions alone, with no Redis, decode or fold timed.

The workload is decoded and folded beforehand; then each batch's transaction is
applied as the daemon applies it (ledger, producer ids, upserts of every rollup,
COMMIT) from as many connections as the daemon has flusher threads. The rate is
what Postgres (with the Python that builds the statements) absorbs for this
rollup set on this machine: no daemon, however fast, exceeds it here.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time

from bench.yardsticks import Run
from streamproc.core.decode import Accepted, decode_batch
from streamproc.core.fold import Hasher, KeyCap, fold
from streamproc.core.rollups import Shard
from streamproc.daemon.worker import counted_shards
from streamproc.dev.synth import SynthEntry
from streamproc.postgres.migrate import migrate
from streamproc.postgres.sink import PostgresSink

BASE_MS = 1_700_000_000_000
Prepared = tuple[list[Accepted], dict[str, Shard], frozenset[int], list[bytes]]


def prepare(entries: list[SynthEntry], batch_size: int, hasher: Hasher) -> list[Prepared]:
    """Decode and fold the workload in batches, as the daemon's main thread would (untimed)."""
    raw = [
        (f"{BASE_MS + i}-0".encode(), {k.encode(): str(v).encode() for k, v in e.fields.items()})
        for i, e in enumerate(entries)
    ]
    now_ms = int(time.time() * 1000)
    batches = []
    for start in range(0, len(raw), batch_size):
        decoded = decode_batch(raw[start : start + batch_size], now_ms)
        accepted, rejected = decoded.accepted, [r.entry_id for r in decoded.rejected]
        cap = KeyCap()
        batches.append((accepted, fold(accepted, hasher, cap), frozenset(cap.capped), rejected))
    return batches


def postgres_bound(database_url: str, entries: list[SynthEntry], batch_size: int = 1000, threads: int = 2) -> Run:
    schema = f"bench_bound_{secrets.token_hex(3)}"
    migrate(database_url, schema)
    hasher = Hasher(secrets.token_bytes(16))
    batches = prepare(entries, batch_size, hasher)
    first = PostgresSink(database_url, schema)
    first.register_streams(["bound"])
    sinks = [first, *(first.twin() for _ in range(threads - 1))]
    jobs: queue.Queue[Prepared | None] = queue.Queue()
    for job in batches:
        jobs.put(job)
    for _ in sinks:
        jobs.put(None)
    errors: list[BaseException] = []

    def apply(sink: PostgresSink) -> None:
        try:
            while (job := jobs.get()) is not None:
                accepted, prefold, capped, rejected = job
                with sink.transaction() as tx:  # as the daemon claims a batch read with `>`
                    claim = tx.claim({"bound": accepted}, capped, {"bound": rejected})
                    tx.write(counted_shards(claim, prefold, bool(capped), hasher, KeyCap().limit, False))
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=apply, args=(sink,)) for sink in sinks]
    started = time.perf_counter()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    applied = first.covered("bound", [a.entry_id for job in batches for a in job[0]])
    for sink in sinks:
        sink.close()
    accepted = sum(len(job[0]) for job in batches)
    if applied != accepted:
        raise RuntimeError(f"the bound applied {applied} of {accepted} entries")
    return Run(f"postgres bound ({threads} connections)", len(entries), seconds, {"batch_size": batch_size})
