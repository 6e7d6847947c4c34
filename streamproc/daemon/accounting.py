"""Accounting of outcomes: per-process totals, the Prometheus counters and the one log line per batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from streamproc.core.decode import Decoded
from streamproc.core.entryid import split_entry_id
from streamproc.daemon import metrics
from streamproc.daemon.notify import Notifier
from streamproc.postgres.batch import Claim
from streamproc.redis.source import Batch

log = structlog.get_logger("streamproc")


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

    def view(self) -> dict[str, int]:
        """The counts, for the shutdown log line."""
        return {
            "batches": self.batches,
            "ok": self.ok,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "trimmed": self.trimmed,
            "reclaimed": self.reclaimed,
        }


@dataclass
class BatchResult:
    entries: int
    ok: int
    dead_lettered: int
    duplicates: int
    trimmed: int
    flush_s: float


class Accounting:
    """Books each finished batch once: totals, metrics, the ``batch`` log line, systemd status."""

    def __init__(self, notifier: Notifier, on_batch: Callable[[BatchResult], None] | None = None) -> None:
        self.totals = Totals()
        self.notifier = notifier
        self.on_batch = on_batch
        self._lock = threading.Lock()  # flusher threads account their batches one at a time
        self._next_status = 0.0

    def reclaimed(self, batch: Batch) -> None:
        """Entries taken over from stalled consumers."""
        self.totals.reclaimed += len(batch)
        for stream, entries in batch.entries.items():
            metrics.RECLAIMED.labels(stream).inc(len(entries))
        log.info("reclaimed", entries=len(batch), trimmed=sum(map(len, batch.trimmed.values())))

    def lost(self, lost: Mapping[str, int]) -> None:
        """Entries deleted before any worker of the group read them (a producer's MAXLEN, an
        XTRIM): they never reach the rollups. Counted in the trimmed metric, which alerts."""
        for stream, n in lost.items():
            with self._lock:
                self.totals.trimmed += n
            metrics.TRIMMED.labels(stream).inc(n)
            log.warning(
                "entries deleted before delivery",
                stream=stream,
                entries=n,
                hint="a producer's MAXLEN or an XTRIM removed them before the daemon read them",
            )

    def batch(
        self,
        batch: Batch,
        decoded: Mapping[str, Decoded],
        claim: Claim,
        written: Mapping[str, int],
        flush_s: float,
    ) -> BatchResult:
        """Book a committed and acknowledged batch; ``written`` = dead letters written per stream."""
        result = BatchResult(
            entries=len(batch),
            ok=len(claim.counted),
            dead_lettered=sum(written.values()),
            duplicates=claim.duplicates,
            trimmed=sum(len(v) for v in batch.trimmed.values()),
            flush_s=flush_s,
        )
        with self._lock:
            self._book(batch, decoded, claim, result, written)
        return result

    def _book(
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


def _id_range(batch: Batch) -> dict[str, str]:
    """Lowest and highest entry id of the batch (ids only, never payloads)."""
    ids = [eid for entries in batch.entries.values() for eid, _ in entries]
    if not ids:
        return {}
    keys = list(map(split_entry_id, ids))  # each id split once, not once for min and once for max
    first = min(range(len(ids)), key=keys.__getitem__)
    last = max(range(len(ids)), key=keys.__getitem__)
    return {"first_id": ids[first].decode(), "last_id": ids[last].decode()}
