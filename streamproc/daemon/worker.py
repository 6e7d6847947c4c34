"""The daemon's main loop: read -> reclaim -> decode -> fold -> flush -> ack.

Each step is a small method a test can call alone. The loop only decides
which step comes next and when to stop.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Final, NoReturn, TypeVar

import structlog

from streamproc.config import Settings
from streamproc.core.decode import Decoded, Rejected, decode_batch
from streamproc.core.enrich import Enricher
from streamproc.core.entryid import split_entry_id
from streamproc.core.fold import Hasher, KeyCap, fold
from streamproc.core.rollups import Shard
from streamproc.daemon import metrics
from streamproc.daemon.backoff import Backoff, Failpoints
from streamproc.daemon.enrichment import Enrichment
from streamproc.daemon.flusher import Flusher
from streamproc.daemon.notify import Notifier
from streamproc.errors import ShutdownTimeout, SinkError, SinkUnavailable, SourceUnavailable, TransactionAborted
from streamproc.postgres.migrate import check_migrated
from streamproc.postgres.sink import Claim, PostgresSink
from streamproc.redis.source import Batch, RedisSource

log = structlog.get_logger("streamproc")
T = TypeVar("T")

PRUNE_INTERVAL_S: Final = 600.0
DRAIN_BLOCK_MS: Final = 200


@dataclass
class Totals:
    """What this process did; fed to the final report and the metrics."""

    batches: int = 0
    ok: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    trimmed: int = 0
    reclaimed: int = 0
    by_stream: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, stream: str, outcome: str, n: int) -> None:
        per = self.by_stream.setdefault(stream, {})
        per[outcome] = per.get(outcome, 0) + n


@dataclass
class Job:
    """A prepared batch on its way to Postgres."""

    batch: Batch
    decoded: dict[str, Decoded]
    prefold: dict[str, Shard]
    capped: frozenset[int] = frozenset()  # id() of entries folded with a value capped to (other)


@dataclass
class BatchResult:
    entries: int
    ok: int
    dead_lettered: int
    duplicates: int
    trimmed: int
    flush_s: float


class Worker:
    def __init__(
        self,
        settings: Settings,
        source: RedisSource,
        sink: PostgresSink,
        *,
        drain: bool = False,
        failpoints: Failpoints | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.sink = sink
        self.drain = drain
        self.hasher = Hasher(settings.require_secret())
        self.enrichment = Enrichment(settings, self.hasher)
        self.approximate = settings.approximate_uniques
        self.failpoints = failpoints or Failpoints()
        self.on_batch = on_batch
        self.notifier = notifier or Notifier({})
        self._next_status = 0.0
        self._stop_reason = "requested"
        self._stop_announced = False
        self._in_hand: set[tuple[str, bytes]] = set()  # (stream, id) read and not yet acked
        self._in_hand_lock = threading.Lock()
        self.totals = Totals()
        self.stopping = threading.Event()
        self._stop_deadline: float | None = None
        self._next_reclaim = 0.0
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()
        self._account_lock = threading.Lock()  # flusher threads account their batches one at a time
        self._local = threading.local()
        self._sinks_lock = threading.Lock()
        self._sinks_in_use: list[PostgresSink] = []

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Run until drained (``drain``) or signalled; returns the exit code."""
        self._install_signals()
        try:
            self.start()
        except _StoppedBeforeReady:
            self._announce_stop()
            log.info("shutdown", before_ready=True, **self._totals_view())
            return 0
        drained = False
        try:
            self.recover_own_pending()
            with Flusher[Job](self.finish, self.settings.flushers) as flusher:
                while not self.stopping.is_set():
                    self.notifier.watchdog()
                    flusher.raise_if_failed()  # a failed commit stops the daemon even when no batch follows
                    batch = self.next_batch()
                    if not batch.is_empty():
                        flusher.submit(self.prepare(batch))
                    elif self.drain and self._drained():
                        drained = True
                        break
                self._announce_stop()
        except BaseException as exc:
            self.stop(f"error: {type(exc).__name__}")  # gives the flusher a deadline
            self._announce_stop()
            raise
        log.info("drained" if drained else "shutdown", **self._totals_view())
        return 0

    def start(self) -> None:
        """Wait for both servers and check them; a stop request while waiting ends the run
        (nothing is in hand yet)."""
        self._retry(self.source.ping, "redis", "connect", on_stop=_stopped_before_ready)
        created = self.source.ensure_groups(self.settings.group_start_id)
        self._retry(self.sink.open, "postgres", "connect", on_stop=_stopped_before_ready)
        check_migrated(self.sink.conn, self.approximate)
        self._retry(
            lambda: self.sink.register_streams(self.source.streams),
            "postgres",
            "connect",
            on_stop=_stopped_before_ready,
        )
        log.info(
            "ready",
            streams=self.source.streams,
            group=self.source.group,
            consumer=self.source.consumer,
            groups_created=created,
            drain=self.drain,
        )
        self.notifier.ready(f"consuming {', '.join(self.source.streams)} as {self.source.consumer}")

    def stop(self, reason: str = "requested") -> None:
        """Ask the loop to finish the batch in hand and stop. Safe in a signal handler:
        it takes no lock and writes nothing (the loop announces the stop)."""
        if not self.stopping.is_set():
            self._stop_reason = reason
            self._stop_deadline = time.monotonic() + self.settings.drain_timeout_s
            self.stopping.set()

    def _announce_stop(self) -> None:
        """Log and notify the stop once, from the loop (never from a signal handler, where
        taking the log's lock could deadlock with the line being written)."""
        if self.stopping.is_set() and not self._stop_announced:
            self._stop_announced = True
            log.info("stopping", reason=self._stop_reason, drain_timeout_s=self.settings.drain_timeout_s)
            self.notifier.stopping()

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            if self.stopping.is_set():
                # No logging here: the interrupted code may hold the log's lock.
                os.write(2, b'{"event": "second signal, exiting at once", "level": "warning"}\n')
                os._exit(1)  # uncommitted batches stay pending and are redelivered
            self.stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # -- steps -------------------------------------------------------------------

    def recover_own_pending(self) -> None:
        """After a restart, finish this consumer's own pending entries first.

        If some were already re-read after an earlier crash (delivered twice or
        more), the worker may be dying on one of them: read them one at a time,
        so each crash adds a delivery to one entry only and the culprit reaches
        max_deliveries (and the dead-letter stream) before its neighbours.
        """
        suspicious = self._retry_read(self.source.own_pending_max_deliveries, on_stop=lambda: 0) > 1
        count = 1 if suspicious else self.settings.batch_size
        if suspicious:
            log.warning("recovering own pending entries one at a time: an earlier run died on them")
        while not self.stopping.is_set():
            batch = self._retry_read(lambda: self.source.read_own_pending(count))
            if batch.is_empty():
                return
            log.info("recovering own pending entries", entries=len(batch))
            self.process(batch)
            self.notifier.watchdog()

    def next_batch(self) -> Batch:
        """Reclaim stalled entries when due, else read new ones."""
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.settings.reclaim_interval_ms / 1000
            in_hand = self._in_hand_snapshot()
            batch = self._retry_read(
                lambda: self.source.reclaim(self.settings.min_idle_ms, self.settings.batch_size, in_hand)
            )
            if not batch.is_empty():
                self.totals.reclaimed += len(batch)
                for stream, entries in batch.entries.items():
                    metrics.RECLAIMED.labels(stream).inc(len(entries))
                log.info("reclaimed", entries=len(batch), trimmed=sum(map(len, batch.trimmed.values())))
                return batch
        block = min(self.settings.block_ms, DRAIN_BLOCK_MS) if self.drain else self.settings.block_ms
        return self._retry_read(lambda: self.source.read_new(self.settings.batch_size, block))

    def process(self, batch: Batch) -> BatchResult:
        """decode -> fold -> flush (commit) -> ack, for one batch, in this thread."""
        return self.finish(self.prepare(batch))

    def prepare(self, batch: Batch) -> Job:
        """The Python half of a batch: decode and fold (no I/O)."""
        with self._in_hand_lock:
            self._in_hand.update((s, eid) for s, entries in batch.entries.items() for eid, _ in entries)
        decoded = self.decode(batch)
        cap = KeyCap(self.settings.max_keys_per_batch)
        accepted = (a for items in decoded.values() for a in items.accepted)
        prefold = fold(accepted, self.hasher, cap, self.approximate, self.enrichment.enricher)
        if cap.overflowed:
            metrics.KEY_OVERFLOW.inc(cap.overflowed)
            log.warning("distinct key cap reached", events_in_overflow=cap.overflowed, max_keys_per_batch=cap.limit)
        return Job(batch, decoded, prefold, capped=frozenset(cap.capped))

    def finish(self, job: Job) -> BatchResult:
        """The I/O half: commit in Postgres, then ack in Redis, then account."""
        batch, decoded = job.batch, job.decoded
        started = time.perf_counter()
        claim = self.flush(decoded, job.prefold, job.capped)
        flush_s = time.perf_counter() - started
        written = self.ack(batch, decoded)
        with self._in_hand_lock:
            self._in_hand.difference_update((s, eid) for s, entries in batch.entries.items() for eid, _ in entries)
        result = BatchResult(
            entries=len(batch),
            ok=len(claim.counted),
            dead_lettered=sum(written.values()),
            duplicates=claim.duplicates,
            trimmed=sum(len(v) for v in batch.trimmed.values()),
            flush_s=flush_s,
        )
        with self._account_lock:
            self._account(batch, decoded, claim, result, written)
        self.maybe_prune()
        return result

    def decode(self, batch: Batch) -> dict[str, Decoded]:
        """Validate each entry; entries redelivered too often are not even decoded."""
        now_ms = int(time.time() * 1000)
        limit = self.settings.max_deliveries
        out = {}
        for stream, entries in batch.entries.items():
            counts = batch.delivery_counts.get(stream, {})
            poison = [(eid, f) for eid, f in entries if counts.get(eid, 1) > limit]
            if poison:
                entries = [(eid, f) for eid, f in entries if counts.get(eid, 1) <= limit]
            if self.failpoints.content is not None:
                for _eid, f in entries:
                    self.failpoints.check_content(f)
            decoded = decode_batch(entries, now_ms, self.settings.max_entry_bytes, self.settings.max_event_age_days)
            for eid, f in poison:
                reason = (
                    f"delivered {counts[eid]} times without being committed"
                    f" (max_deliveries={limit}); it may crash or stall the worker"
                )
                decoded.rejected.append(Rejected(eid, f or {}, reason))
            out[stream] = decoded
        return out

    def flush(
        self, decoded: Mapping[str, Decoded], prefold: dict[str, Shard], capped: frozenset[int] = frozenset()
    ) -> Claim:
        """Apply the batch in one Postgres transaction; retried until it commits."""
        accepted = {s: d.accepted for s, d in decoded.items() if d.accepted}
        n = sum(len(v) for v in accepted.values())
        if n == 0:
            return Claim([], 0)
        self.failpoints.hit("before_flush")
        backoff = Backoff()
        while True:
            try:
                with self._sink().transaction() as tx:
                    claim = tx.claim(accepted, capped)
                    shards = counted_shards(
                        claim,
                        prefold,
                        bool(capped),
                        self.hasher,
                        self.settings.max_keys_per_batch,
                        self.approximate,
                        self.enrichment.enricher,
                    )
                    shards, sessions = self.enrichment.with_sessions(tx, claim.counted, shards)
                    self.failpoints.hit("before_commit")
                    tx.write(shards)
                self.failpoints.hit("after_commit")
                self.enrichment.committed(shards, sessions)
                return claim
            except SinkUnavailable as exc:
                self._check_deadline("flush", exc)
                if isinstance(exc, TransactionAborted):
                    metrics.TRANSACTION_RETRIES.inc()
                else:
                    metrics.RECONNECTS.labels("postgres").inc()
                self.notifier.watchdog()
                self.notifier.status(f"Postgres unavailable, retrying: {exc}")
                delay = backoff.wait()
                log.warning("flush failed, retrying", error=str(exc), retry_in_s=round(delay, 2))

    def ack(self, batch: Batch, decoded: Mapping[str, Decoded]) -> dict[str, int]:
        """XACK the batch; dead-letter the rejected entries in the same round trip."""
        acks: dict[str, list[bytes]] = {}
        dead: dict[str, list[tuple[bytes, Mapping[bytes, bytes], str]]] = {}
        for stream, d in decoded.items():
            acks[stream] = [a.entry_id for a in d.accepted]
            dead[stream] = [(r.entry_id, r.fields, r.reason) for r in d.rejected]
        for stream, ids in batch.trimmed.items():
            acks.setdefault(stream, []).extend(ids)
        return self._retry(lambda: self.source.ack(acks, dead), "redis", "ack")

    def maybe_prune(self) -> None:
        with self._prune_lock:
            now = time.monotonic()
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_INTERVAL_S
        floor_ms = int(time.time() * 1000) - self.settings.ledger_retention_s * 1000
        no_firsts: dict[str, int | None] = {}  # stopping while Redis is away: skip the housekeeping
        firsts = self._retry(self.source.first_entry_ms, "redis", "prune", on_stop=lambda: no_firsts)
        keep_from = {s: min(floor_ms, first if first is not None else floor_ms) for s, first in firsts.items()}
        try:
            removed = self._sink().prune_ledger(keep_from)
        except SinkError as exc:  # pruning is housekeeping: never worth stopping the daemon for
            log.warning("ledger prune skipped", error=str(exc))
            return
        if removed:
            log.info("ledger pruned", rows=removed)

    # -- helpers -------------------------------------------------------------------

    def _sink(self) -> PostgresSink:
        """This thread's Postgres connection: the first thread to ask gets the worker's own
        (already open), each further flusher thread a twin of it."""
        sink: PostgresSink | None = getattr(self._local, "sink", None)
        if sink is None:
            with self._sinks_lock:
                sink = self.sink.twin() if self._sinks_in_use else self.sink
                self._sinks_in_use.append(sink)
            self._local.sink = sink
        return sink

    def close_sinks(self) -> None:
        with self._sinks_lock:
            for sink in {id(s): s for s in [self.sink, *self._sinks_in_use]}.values():
                sink.close()

    def _in_hand_snapshot(self) -> frozenset[tuple[str, bytes]]:
        with self._in_hand_lock:
            return frozenset(self._in_hand)

    def _drained(self) -> bool:
        drained: bool = self._retry(self.source.drained, "redis", "read", on_stop=lambda: False)
        return drained

    def _account(
        self, batch: Batch, decoded: Mapping[str, Decoded], claim: Claim, r: BatchResult, written: Mapping[str, int]
    ) -> None:
        t = self.totals
        t.batches += 1
        t.ok += r.ok
        t.dead_lettered += r.dead_lettered
        t.duplicates += r.duplicates
        t.trimmed += r.trimmed
        counted = {id(a) for a in claim.counted}
        for stream, d in decoded.items():
            ok = sum(1 for a in d.accepted if id(a) in counted)
            dead = written.get(stream, 0)  # a bad entry seen again is a duplicate, not a second dead letter
            for outcome, n in (
                ("ok", ok),
                ("duplicate_skipped", len(d.accepted) - ok + len(d.rejected) - dead),
                ("dead_lettered", dead),
            ):
                t.add(stream, outcome, n)
                metrics.EVENTS.labels(stream, outcome).inc(n)
        for stream, ids in batch.trimmed.items():
            metrics.TRIMMED.labels(stream).inc(len(ids))
        metrics.observe_batch(r.entries, r.flush_s if r.ok + r.duplicates else None)
        log.info(
            "batch",
            entries=r.entries,
            ok=r.ok,
            dead_lettered=r.dead_lettered,
            duplicates=r.duplicates,
            trimmed=r.trimmed,
            flush_ms=round(r.flush_s * 1000, 1),
            **_id_range(batch),
            **({"refolded": claim.refolded} if claim.duplicates else {}),
            **({"by_stream": {s: len(e) for s, e in batch.entries.items()}} if len(batch.entries) > 1 else {}),
        )
        if self.on_batch is not None:
            self.on_batch(r)
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + 1.0
            self.notifier.status(
                f"{t.ok} counted, {t.dead_lettered} dead-lettered, {t.duplicates} duplicates;"
                f" last batch {r.entries} entries in {r.flush_s * 1000:.0f} ms"
            )

    def _totals_view(self) -> dict[str, int]:
        t = self.totals
        return {
            "batches": t.batches,
            "ok": t.ok,
            "dead_lettered": t.dead_lettered,
            "duplicates": t.duplicates,
            "trimmed": t.trimmed,
            "reclaimed": t.reclaimed,
        }

    def _check_deadline(self, step: str, exc: Exception) -> None:
        if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            raise ShutdownTimeout(
                f"could not finish the {step} of the batch in hand before the drain deadline"
                f" ({self.settings.drain_timeout_s:g} s): {exc}. Its entries stay pending and"
                " will be redelivered; nothing is lost."
            ) from exc

    def _retry_read(self, call: Callable[[], T], on_stop: Callable[[], T] = Batch) -> T:  # type: ignore[assignment]
        """A read waits for Redis only until a stop is requested: then it comes back empty
        (``on_stop``), since a read that never happened leaves nothing to finish."""
        return self._retry(call, "redis", "read", on_stop=on_stop)

    def _retry(self, call: Callable[[], T], server: str, step: str, on_stop: Callable[[], T] | None = None) -> T:
        """Call until the server answers, backing off. Once stopping: ``on_stop()`` if given
        (nothing in hand depends on this call), else retried until the drain deadline."""
        unavailable = SourceUnavailable if server == "redis" else SinkUnavailable
        backoff = Backoff()
        while True:
            try:
                return call()
            except unavailable as exc:
                if on_stop is not None and self.stopping.is_set():
                    return on_stop()
                self._check_deadline(step, exc)
                metrics.RECONNECTS.labels(server).inc()
                self.notifier.watchdog()
                delay = backoff.wait()
                log.warning(f"{server} unavailable, retrying", step=step, error=str(exc), retry_in_s=round(delay, 2))


def counted_shards(
    claim: Claim,
    prefold: dict[str, Shard],
    capped: bool,
    hasher: Hasher,
    max_keys: int,
    approximate: bool,
    enricher: Enricher | None = None,
) -> dict[str, Shard]:
    """The rollups of the counted entries: the batch's fold when nothing was skipped;
    the fold minus the sums of the skipped entries when they only repeat counted
    events; else a fold of the counted entries alone."""
    if not claim.skipped:
        return prefold
    cap = KeyCap(max_keys)
    if claim.repeats and not capped:  # a capped fold cannot be corrected, only redone
        repeats = fold(claim.skipped, hasher, cap, approximate, enricher)
        return {t: s.without_sums_of(repeats[t]) if repeats[t].rows else s for t, s in prefold.items()}
    claim.refolded = True
    return fold(claim.counted, hasher, cap, approximate, enricher)


class _StoppedBeforeReady(Exception):
    """A stop request arrived while start-up waited for a server."""


def _stopped_before_ready() -> NoReturn:
    raise _StoppedBeforeReady


def _id_range(batch: Batch) -> dict[str, str]:
    """Lowest and highest entry id of the batch (ids only, never payloads)."""
    ids = [eid for entries in batch.entries.values() for eid, _ in entries]
    if not ids:
        return {}
    return {"first_id": min(ids, key=split_entry_id).decode(), "last_id": max(ids, key=split_entry_id).decode()}
