"""The daemon's main loop: read -> reclaim -> decode -> fold -> flush -> ack.

Each step is a small method a test can call alone; the loop only decides which
step comes next and when to stop. The concerns around the steps live apart:
retries and the drain deadline in :mod:`~streamproc.daemon.retry`, the entries
in hand in :mod:`~streamproc.daemon.inhand`, redelivered entries and the poison limit in
:mod:`~streamproc.daemon.redelivery`, totals, metrics and the batch log
line in :mod:`~streamproc.daemon.accounting`, one Postgres connection per
flusher thread in :mod:`~streamproc.daemon.sinks`.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Final

import structlog

from streamproc.config import Settings
from streamproc.core.decode import Accepted, Decoded, decode_batch
from streamproc.core.enrich import Enricher
from streamproc.core.fold import DEFAULT_URLS, Hasher, KeyCap
from streamproc.core.fold import fold as fold_events
from streamproc.core.rollups import Shard
from streamproc.core.urls import UrlRules
from streamproc.daemon import metrics
from streamproc.daemon.accounting import Accounting, BatchResult, Totals
from streamproc.daemon.backoff import Failpoints
from streamproc.daemon.enrichment import Enrichment
from streamproc.daemon.flusher import Flusher
from streamproc.daemon.inhand import InHand, Refresher
from streamproc.daemon.isolate import Part, by_stream, isolate, merged, reject
from streamproc.daemon.notify import Notifier
from streamproc.daemon.redelivery import Redelivery, split_poison
from streamproc.daemon.retry import Retrier
from streamproc.daemon.sinks import ThreadSinks
from streamproc.daemon.startup import StoppedBeforeReady, start
from streamproc.errors import EntryRejected, SinkError
from streamproc.postgres.batch import Claim
from streamproc.postgres.sink import PostgresSink
from streamproc.redis.source import Batch, RedisSource

__all__ = ["BatchResult", "Job", "Totals", "Worker", "counted_shards"]

log = structlog.get_logger("streamproc")

PRUNE_INTERVAL_S: Final = 600.0
DRAIN_BLOCK_MS: Final = 200


@dataclass
class Job:
    """A prepared batch on its way to Postgres."""

    batch: Batch
    decoded: dict[str, Decoded]
    prefold: dict[str, Shard]
    capped: frozenset[int] = frozenset()  # id() of entries folded with a value capped to (other)


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
        self.urls = UrlRules(settings.normalize_paths, settings.path_keep_params)
        self.approximate = settings.approximate_uniques
        self.failpoints = failpoints or Failpoints()
        self.notifier = notifier or Notifier({})
        self.stopping = threading.Event()
        self.retry = Retrier(self.stopping, settings.drain_timeout_s, self.notifier)
        self.in_hand = InHand()
        self.accounting = Accounting(self.notifier, on_batch)
        self.sinks = ThreadSinks(sink)
        self.redelivery = Redelivery(
            settings, source, self.retry, self.in_hand, self.accounting, self.notifier, self.stopping, self.process
        )
        self._stop_reason = "requested"
        self._stop_announced = False
        self._next_reclaim = 0.0
        self._read_count = settings.batch_size  # grows while behind, see read()
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    @property
    def totals(self) -> Totals:
        return self.accounting.totals

    # -- lifecycle -------------------------------------------------------------

    def run(self) -> int:
        """Run until drained (``drain``) or signalled; returns the exit code."""
        self.install_signals()
        try:
            self.start()
        except StoppedBeforeReady:
            self._announce_stop()
            log.info("shutdown", before_ready=True, **self.totals.view())
            return 0
        drained = False
        try:
            with Refresher(self.in_hand, self.source.refresh, self.settings.min_idle_ms):
                self.redelivery.recover_own_pending()
                with Flusher[Job](self.finish, self.settings.flushers) as flusher:
                    while not self.stopping.is_set():
                        self.notifier.watchdog()
                        flusher.raise_if_failed()  # a failed commit stops the daemon even when no batch follows
                        batch = self.next_batch(flusher.wait_idle)
                        if batch.alone:
                            self.process(batch)  # nothing else in hand (see redelivery)
                        elif not batch.is_empty():
                            flusher.submit(self.prepare(batch))
                        elif self.drain and self._drained():
                            drained = True
                            break
                    self._announce_stop()
        except BaseException as exc:
            self.stop(f"error: {type(exc).__name__}")  # gives the flusher a deadline
            self._announce_stop()
            raise
        log.info("drained" if drained else "shutdown", **self.totals.view())
        return 0

    def start(self) -> None:
        """Wait for both servers and check them (:func:`.startup.start`)."""
        start(self.settings, self.source, self.sink, self.retry, self.notifier, self.drain)

    def stop(self, reason: str = "requested") -> None:
        """Ask the loop to finish the batch in hand and stop. Safe in a signal handler:
        it takes no lock and writes nothing (the loop announces the stop)."""
        if not self.stopping.is_set():
            self._stop_reason = reason
            self.retry.deadline = time.monotonic() + self.settings.drain_timeout_s
            self.stopping.set()

    def _announce_stop(self) -> None:
        """Log and notify the stop once, from the loop (never from a signal handler, where
        taking the log's lock could deadlock with the line being written)."""
        if self.stopping.is_set() and not self._stop_announced:
            self._stop_announced = True
            log.info("stopping", reason=self._stop_reason, drain_timeout_s=self.settings.drain_timeout_s)
            self.notifier.stopping()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop the daemon gracefully (a second one exits at once); idempotent.
        Installed before the seconds of start-up work, so a stop during start-up exits 0."""
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

    def next_batch(self, wait_idle: Callable[[], None] = lambda: None) -> Batch:
        """Reclaim stalled entries when due, else read new ones. ``wait_idle``: wait until
        nothing is in hand (the flushers), before an entry is reclaimed alone."""
        now = time.monotonic()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.settings.reclaim_interval_ms / 1000
            batch = self.redelivery.reclaim(wait_idle)
            if batch.alone or batch.waiting:
                self._next_reclaim = now  # more may be due alone: reclaim again next turn
            if not batch.is_empty():
                return batch
        return self.read()

    def read(self) -> Batch:
        """New entries for this consumer (XREADGROUP); a short block when draining.

        Each read asks for ``batch_size`` entries per stream; while the group is behind (the
        previous read came back full from some stream), twice as many as the previous read, up
        to ``backlog_batch_size``: a backlog is folded into fewer, larger batches, so fewer
        rollup rows are written per event. The first read that is not full starts over."""
        block = min(self.settings.block_ms, DRAIN_BLOCK_MS) if self.drain else self.settings.block_ms
        count = self._read_count
        batch = self.retry.read(lambda: self.source.read_new(count, block))
        full = any(len(entries) >= count for entries in batch.entries.values())
        ceiling = max(self.settings.batch_size, self.settings.backlog_batch_size)
        self._read_count = min(2 * count, ceiling) if full else self.settings.batch_size
        if batch.lost:
            self.accounting.lost(batch.lost)
        return batch

    def process(self, batch: Batch) -> BatchResult:
        """decode -> fold -> flush (commit) -> ack, for one batch, in this thread."""
        return self.finish(self.prepare(batch))

    def prepare(self, batch: Batch) -> Job:
        """The Python half of a batch: decode and fold (no I/O)."""
        self.in_hand.add(batch)
        decoded = self.decode(batch)
        prefold, capped = self.fold(decoded)
        return Job(batch, decoded, prefold, capped)

    def finish(self, job: Job) -> BatchResult:
        """The I/O half: commit in Postgres, then ack in Redis, then account."""
        started = time.perf_counter()
        claim = self.flush(job.decoded, job.prefold, job.capped, job.batch)
        flush_s = time.perf_counter() - started
        written = self.ack(job.batch, job.decoded, self.applied_poison(job))
        self.in_hand.discard(job.batch)
        result = self.accounting.batch(job.batch, job.decoded, claim, written, flush_s)
        self.maybe_prune()
        return result

    def decode(self, batch: Batch) -> dict[str, Decoded]:
        """Validate each entry; entries redelivered too often are not even decoded."""
        now_ms = int(time.time() * 1000)
        limit = self.settings.max_deliveries
        out = {}
        for stream, all_entries in batch.entries.items():
            entries, poison = split_poison(all_entries, batch.delivery_counts.get(stream, {}), limit)
            if self.failpoints.content is not None or self.failpoints.hang is not None:
                for _eid, f in entries:
                    self.failpoints.check_content(f)
            decoded = decode_batch(entries, now_ms, self.settings.max_entry_bytes, self.settings.max_event_age_days)
            decoded.rejected.extend(poison)
            out[stream] = decoded
        return out

    def fold(self, decoded: Mapping[str, Decoded]) -> tuple[dict[str, Shard], frozenset[int]]:
        """The batch's rollups, and the id() of entries folded with a value capped to (other)."""
        cap = KeyCap(self.settings.max_keys_per_batch)
        events = (a for items in decoded.values() for a in items.accepted)
        prefold = fold_events(events, self.hasher, cap, self.approximate, self.enrichment.enricher, self.urls)
        if cap.overflowed:
            metrics.KEY_OVERFLOW.inc(cap.overflowed)
            log.warning("distinct key cap reached", events_in_overflow=cap.overflowed, max_keys_per_batch=cap.limit)
        return prefold, frozenset(cap.capped)

    def flush(
        self,
        decoded: Mapping[str, Decoded],
        prefold: dict[str, Shard],
        capped: frozenset[int] = frozenset(),
        batch: Batch | None = None,
    ) -> Claim:
        """Apply the batch in one Postgres transaction; retried until it commits. Entries whose
        data Postgres rejects are isolated (:mod:`.isolate`) and moved to ``decoded``'s rejected
        (``batch`` has their fields for the dead-letter stream); the others commit. A batch read
        with ``>`` (``batch.read_new``) is claimed as ranges, see :meth:`BatchTransaction.claim`."""
        accepted = {s: d.accepted for s, d in decoded.items() if d.accepted}
        gaps = {s: [r.entry_id for r in decoded[s].rejected] for s in accepted} if batch and batch.read_new else None
        n = sum(len(v) for v in accepted.values())
        if n == 0:
            return Claim([], 0)
        self.failpoints.hit("before_flush")
        try:
            return self.retry.commit(lambda: self._commit(accepted, prefold, capped, gaps))
        except EntryRejected as exc:
            return self._isolate(decoded, batch, str(exc))

    def _isolate(self, decoded: Mapping[str, Decoded], batch: Batch | None, reason: str) -> Claim:
        part = [(stream, item) for stream, d in decoded.items() for item in d.accepted]
        claims, culprits = isolate(part, self._commit_part, reason)
        reject(decoded, batch, culprits)
        return merged(claims)

    def _commit_part(self, part: Part) -> Claim:
        """Fold and commit some entries of a batch on their own (retrying transient failures).
        Claimed entry by entry: a part leaves out entries between its own, which other parts
        (or the dead-letter stream) take."""
        decoded = {stream: Decoded(items, []) for stream, items in by_stream(part).items()}
        prefold, capped = self.fold(decoded)
        accepted = {stream: d.accepted for stream, d in decoded.items()}
        return self.retry.commit(lambda: self._commit(accepted, prefold, capped, None))

    def _commit(
        self,
        accepted: Mapping[str, list[Accepted]],
        prefold: dict[str, Shard],
        capped: frozenset[int],
        gaps: Mapping[str, list[bytes]] | None,
    ) -> Claim:
        """One attempt: claim the entries, write the rollups of those counted, commit."""
        with self.sinks.get().transaction() as tx:
            claim = tx.claim(accepted, capped, gaps)
            shards = counted_shards(
                claim,
                prefold,
                bool(capped),
                self.hasher,
                self.settings.max_keys_per_batch,
                self.approximate,
                self.enrichment.enricher,
                self.urls,
            )
            shards, sessions = self.enrichment.with_sessions(tx, claim.counted, shards)
            self.failpoints.hit("before_commit")
            tx.write(shards, after_each=lambda: self.failpoints.hit("between_upserts"))
        self.failpoints.hit("after_commit")
        self.enrichment.committed(shards, sessions)
        return claim

    def applied_poison(self, job: Job) -> dict[str, set[bytes]]:
        """Entries past max_deliveries that the ledger holds as applied: a worker died after
        committing them and before its XACK. They never crashed anything; acked, not dead-lettered."""
        out: dict[str, set[bytes]] = {}
        for stream, d in job.decoded.items():
            counts = job.batch.delivery_counts.get(stream, {})
            over = [r.entry_id for r in d.rejected if counts.get(r.entry_id, 1) > self.settings.max_deliveries]
            if over:
                out[stream] = self._applied(stream, over)
        return out

    def _applied(self, stream: str, ids: list[bytes]) -> set[bytes]:
        found: set[bytes] = self.retry.call(lambda: self.sinks.get().applied(stream, ids), "postgres", "ledger")
        return found

    def ack(
        self, batch: Batch, decoded: Mapping[str, Decoded], applied: Mapping[str, set[bytes]] | None = None
    ) -> dict[str, int]:
        """XACK the batch; dead-letter the rejected entries (but those ``applied`` in Postgres)."""
        acks: dict[str, list[bytes]] = {}
        dead: dict[str, list[tuple[bytes, Mapping[bytes, bytes], str]]] = {}
        for stream, d in decoded.items():
            done = (applied or {}).get(stream, set())
            acks[stream] = [a.entry_id for a in d.accepted] + sorted(done)
            dead[stream] = [(r.entry_id, r.fields, r.reason) for r in d.rejected if r.entry_id not in done]
        for stream, ids in batch.trimmed.items():
            acks.setdefault(stream, []).extend(ids)
        return self.retry.call(lambda: self.source.ack(acks, dead), "redis", "ack")

    def maybe_prune(self) -> None:
        with self._prune_lock:
            now = time.monotonic()
            if now < self._next_prune:
                return
            self._next_prune = now + PRUNE_INTERVAL_S
        floor_ms = int(time.time() * 1000) - self.settings.ledger_retention_s * 1000
        no_firsts: dict[str, int | None] = {}  # stopping while Redis is away: skip the housekeeping
        firsts = self.retry.call(self.source.first_entry_ms, "redis", "prune", on_stop=lambda: no_firsts)
        keep_from = {s: min(floor_ms, first if first is not None else floor_ms) for s, first in firsts.items()}
        try:
            removed = self.sinks.get().prune_ledger(keep_from)
        except SinkError as exc:  # pruning is housekeeping: never worth stopping the daemon for
            log.warning("ledger prune skipped", error=str(exc))
            return
        if removed:
            log.info("ledger pruned", rows=removed)

    # -- helpers -------------------------------------------------------------------

    def close_sinks(self) -> None:
        self.sinks.close()

    def _drained(self) -> bool:
        drained: bool = self.retry.call(self.source.drained, "redis", "read", on_stop=lambda: False)
        return drained


def counted_shards(
    claim: Claim,
    prefold: dict[str, Shard],
    capped: bool,
    hasher: Hasher,
    max_keys: int,
    approximate: bool,
    enricher: Enricher | None = None,
    urls: UrlRules = DEFAULT_URLS,
) -> dict[str, Shard]:
    """The rollups of the counted entries: the batch's fold when nothing was skipped;
    the fold minus the sums of the skipped entries when they only repeat counted
    events; else a fold of the counted entries alone."""
    if not claim.skipped:
        return prefold
    cap = KeyCap(max_keys)
    if claim.repeats and not capped:  # a capped fold cannot be corrected, only redone
        repeats = fold_events(claim.skipped, hasher, cap, approximate, enricher, urls)
        return {t: s.without_sums_of(repeats[t]) if repeats[t].rows else s for t, s in prefold.items()}
    claim.refolded = True
    return fold_events(claim.counted, hasher, cap, approximate, enricher, urls)
