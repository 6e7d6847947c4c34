"""One batch's transaction: the exactly-once ledger, producer ids, sessions and the
rollup upserts (:class:`BatchTransaction`, opened by
:meth:`streamproc.postgres.sink.PostgresSink.transaction`).

A batch is applied in one transaction, in a fixed global order (ledger, then
producer ids, then server-side sessions, then each rollup table; rows sorted by
key within each statement) so concurrent workers wait on each other instead of
deadlocking:

1. ``claim``: insert the batch's entry ids into the ledger ``applied_ranges``
   (a range per run of consecutive entries, see migration 009), and the
   producer idempotency keys into ``producer_ids``; ``RETURNING`` tells
   which entries are new. An entry another consumer already applied — a
   redelivery after a crash between COMMIT and XACK, or a zombie consumer's
   late batch — conflicts and is skipped.
2. ``derive_sessions``: the counted entries' server-side sessions (docs/sessions.md).
3. ``write``: upsert the rollup shards of the new entries only.
4. COMMIT. Only after it returns does the worker XACK.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import psycopg
from psycopg import sql

from streamproc.core import rollups as R
from streamproc.core.decode import Accepted
from streamproc.core.entryid import split_entry_id
from streamproc.core.props import prop_pairs
from streamproc.core.sessionize import Point, VisitorKey
from streamproc.core.wire import array_literal
from streamproc.postgres.producer_runs import derive_producer
from streamproc.postgres.sessions import Derived
from streamproc.postgres.sessions import derive as derive_sessions

# The ledger (migration 009): one row per run of consecutive entries, ids as ms * 2^64 + seq.
_CLAIM_RANGES: Final = (
    "INSERT INTO applied_ranges (stream_id, ids, capped) "
    "SELECT s, numrange(lo, hi, '[]'), c "
    "FROM unnest(%t::smallint[], %t::numeric[], %t::numeric[], %t::boolean[]) AS t(s, lo, hi, c) "
    "ORDER BY s, lo ON CONFLICT DO NOTHING RETURNING stream_id, lower(ids)"
)
_ANY_CAPPED: Final = (
    "SELECT EXISTS (SELECT 1 FROM applied_ranges a JOIN unnest(%t::smallint[], %t::numeric[]) AS k(s, key) "
    "ON a.stream_id = k.s AND a.ids @> k.key WHERE a.capped)"
)
_CLAIM_PRODUCER_IDS: Final = (
    "INSERT INTO producer_ids (site, event_id, entry_ms, digest) "
    "SELECT s, e, m, d FROM unnest(%t::text[], %t::text[], %t::bigint[], %t::bigint[]) AS t(s, e, m, d) "
    "ORDER BY s, e ON CONFLICT DO NOTHING RETURNING site, event_id"
)
_WINNER_DIGESTS: Final = (
    "SELECT p.site, p.event_id, p.digest FROM producer_ids p "
    "JOIN unnest(%t::text[], %t::text[]) AS k(s, e) ON p.site = k.s AND p.event_id = k.e"
)


class Claim:
    """The outcome of step 1: which accepted entries are counted.

    ``skipped`` are the others. ``repeats`` is True when each skipped entry is
    known to repeat the content of an event already counted (an entry applied
    before, or a producer retry whose event equals the one that won its id):
    folding it changed no set, minimum or maximum, only sums, which the worker
    can take back out instead of folding the batch again.
    """

    def __init__(self, counted: list[Accepted], duplicates: int, skipped: list[Accepted] | None = None) -> None:
        self.counted = counted
        self.duplicates = duplicates
        self.skipped = skipped or []
        self.repeats = False
        self.refolded = False  # set by the worker: the batch was folded again without the skipped entries


class BatchTransaction:
    """Steps 1 to 3 inside the open transaction (step 4, the COMMIT, is the caller's)."""

    def __init__(self, conn: psycopg.Connection[Any], stream_ids: Mapping[str, int]) -> None:
        self._conn = conn
        self._stream_ids = stream_ids

    def claim(
        self,
        accepted: Mapping[str, Sequence[Accepted]],
        capped: Collection[int] = (),
        read_new: Mapping[str, Collection[bytes]] | None = None,
    ) -> Claim:
        """Claim the batch's entries in the ledger, then their producer ids.

        ``capped`` holds the ``id()`` of the entries whose fold mapped a value to
        "(other)" (recorded, see migration 005). ``read_new`` names the streams whose
        entries all come from one XREADGROUP ``>`` read, each with the ids of that read
        left out of ``accepted`` (dead-lettered): such entries are consecutive in the
        stream and are claimed as ranges, one per run between left-out ids. Entries of
        other streams (own pending, reclaimed) are claimed one by one; so are those of a
        range that overlaps the ledger, which count only where no other row covers them.
        """
        read_new = read_new or {}
        items: list[Accepted] = []
        keys: list[tuple[int, int]] = []  # (stream id, entry key) per item
        ranges: list[_Range] = []
        for stream, entries in accepted.items():
            sid = self._stream_ids[stream]
            start = len(items)
            items.extend(entries)
            keys.extend((sid, entry_key(item.entry_id)) for item in entries)
            gaps = read_new.get(stream)
            if gaps is None:
                ranges.extend(_Range(sid, i, i + 1) for i in range(start, len(items)))
            else:
                ranges.extend(_runs(sid, keys, start, sorted(map(entry_key, gaps))))
        if not items:
            return Claim([], 0)
        taken = self._insert_ranges(ranges, keys, items, capped)
        conflicted = [r for r in ranges if r.stop - r.start > 1 and (r.sid, keys[r.start][1]) not in taken]
        singles: set[tuple[int, int]] = set()
        if conflicted:  # one range per entry: only the entries no other row covers
            singles = self._insert_ranges(
                [_Range(r.sid, i, i + 1) for r in conflicted for i in range(r.start, r.stop)], keys, items, capped
            )
        whole = not conflicted and len(taken) == len(ranges)  # the usual case: every run was new
        fresh = items if whole else _covered(keys, items, ranges, taken, singles)
        counted = self._claim_producer_ids(fresh, capped)
        total = len(items)
        if len(counted) == total:
            return Claim(counted, 0)
        kept = {id(i) for i in counted}
        skipped = [(key, i) for key, i in zip(keys, items, strict=True) if id(i) not in kept]
        claim = Claim(counted, total - len(counted), [i for _, i in skipped])
        claim.repeats = self._all_repeats(skipped)
        return claim

    def _insert_ranges(
        self, ranges: list[_Range], keys: list[tuple[int, int]], items: list[Accepted], capped: Collection[int]
    ) -> set[tuple[int, int]]:
        """Insert the ranges that overlap no ledger row (waiting for transactions in flight
        that hold an overlapping one); returns ``(stream id, first key)`` of those inserted.
        The same single entry twice in ``ranges`` is sent once."""
        seen: set[tuple[int, int]] = set()
        unique = []
        for r in ranges:
            if r.stop - r.start > 1 or keys[r.start] not in seen:
                seen.add(keys[r.start])
                unique.append(r)
        ranges = unique
        flags = ["t" if capped and any(id(items[i]) in capped for i in range(r.start, r.stop)) else "f" for r in ranges]
        rows = self._conn.execute(
            _CLAIM_RANGES,
            (
                array_literal([r.sid for r in ranges], text=False),
                array_literal([keys[r.start][1] for r in ranges], text=False),
                array_literal([keys[r.stop - 1][1] for r in ranges], text=False),
                array_literal(flags, text=False),
            ),
        ).fetchall()
        return {(sid, int(lo)) for sid, lo in rows}

    def _claim_producer_ids(self, fresh: list[Accepted], capped: Collection[int]) -> list[Accepted]:
        """Drop entries whose producer id was already counted (here or before)."""
        with_id = [item for item in fresh if item.event.id is not None]
        if not with_id:
            return fresh
        winners: dict[tuple[str, str], Accepted] = {}
        for item in with_id:
            winners.setdefault((item.event.site, item.event.id), item)  # type: ignore[arg-type]  # id is set
        keys = list(winners)
        rows = self._conn.execute(
            _CLAIM_PRODUCER_IDS,
            (
                *_site_id_literals(keys),
                array_literal([split_entry_id(winners[k].entry_id)[0] for k in keys], text=False),
                # A capped winner was folded differently from its content: no digest, no repeats.
                array_literal([None if id(winners[k]) in capped else event_digest(winners[k]) for k in keys], False),
            ),
        ).fetchall()
        if len(rows) == len(with_id):  # every id new, none twice in the batch: all counted
            return fresh
        new_keys = {(site, eid) for site, eid in rows}
        return [
            item
            for item in fresh
            if item.event.id is None
            or ((item.event.site, item.event.id) in new_keys and winners[(item.event.site, item.event.id)] is item)
        ]

    def _all_repeats(self, skipped: list[tuple[tuple[int, int], Accepted]]) -> bool:
        """Whether every skipped entry repeats an event already counted (see :class:`Claim`).

        Without a producer id, an entry is skipped only as already applied: its
        content was counted then, as it folds now unless that fold was capped (or
        another entry of its ledger range was: the flag is per row).
        With one, its digest must equal the stored digest of the event that won
        the id (in this batch or before; none is stored for a capped winner).
        """
        plain = [key for key, i in skipped if i.event.id is None]
        if plain:
            sids, entry_keys = zip(*plain, strict=True)
            row = self._conn.execute(
                _ANY_CAPPED, (array_literal(sids, text=False), array_literal(entry_keys, text=False))
            ).fetchone()
            if row is None or row[0]:
                return False
        with_id = {(i.event.site, i.event.id): i for _, i in skipped if i.event.id is not None}
        if not with_id:
            return True
        keys = list(with_id)
        stored = {
            (site, eid): digest
            for site, eid, digest in self._conn.execute(_WINNER_DIGESTS, _site_id_literals(keys)).fetchall()
        }
        return all(
            stored.get((i.event.site, i.event.id)) == event_digest(i) for _, i in skipped if i.event.id is not None
        )

    def derive_sessions(
        self,
        points: Mapping[VisitorKey, list[Point]],
        gap_ms: int,
        approximate: bool,
        keep_from_ms: int = 0,
        producer: Mapping[VisitorKey, list[Point]] | None = None,
    ) -> Derived:
        """Server-side sessions of the counted entries' sessionless events (:mod:`.sessions`),
        then the runs of their producer sessions (``producer``, :mod:`.producer_runs`)."""
        derived = derive_sessions(self._conn, points, gap_ms, approximate, keep_from_ms)
        derive_producer(self._conn, producer or {}, gap_ms, approximate, keep_from_ms, derived)
        return derived

    def write(self, shards: Mapping[str, R.Shard], after_each: Callable[[], None] | None = None) -> int:
        """Upsert every non-empty shard; returns the number of rows sent.

        One statement at a time, each ending with a Sync, never in pipeline mode: a
        server waiting on us between statements is then "idle in transaction", which
        ``idle_in_transaction_session_timeout`` bounds even when this process is frozen.
        ``after_each`` runs after each statement (a failpoint for the tests).
        """
        sent = 0
        with self._conn.cursor() as cur:
            for shard in shards.values():  # always in rollups() order
                if not len(shard):
                    continue
                cur.execute(_sql(shard.rollup), shard.rollup.parameters(shard.columns()))
                sent += len(shard)
                if after_each is not None:
                    after_each()
        return sent


_SQL_CACHE: dict[str, sql.SQL] = {}


def _sql(rollup: R.Rollup) -> sql.SQL:
    text = _SQL_CACHE.get(rollup.table)
    if text is None:
        text = _SQL_CACHE[rollup.table] = sql.SQL(rollup.upsert_sql())  # built from declarations, not input
    return text


def event_digest(item: Accepted) -> int:
    """64 bits of BLAKE2b over what the rollups read of an event, canonically encoded: two
    events with equal digests fold the same way. The time is the instant in ms (an integer
    and an RFC 3339 string for it are one event); ``props`` as the pairs ``event_props_daily``
    counts (key order and JSON/flat form do not matter), and left out when empty, so the
    digest of an event without properties is the one stored before properties were counted."""
    fields = msgspec.structs.asdict(item.event)
    fields["ts"] = item.ts_ms
    fields["type"] = item.event.__struct_config__.tag
    props = fields.pop("props", None)
    if props:
        fields["props"] = prop_pairs(props)
    digest = hashlib.blake2b(msgspec.json.encode(fields), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _site_id_literals(keys: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """The sites and the producer ids of ``(site, id)`` keys, as two text array literals."""
    return array_literal([k[0] for k in keys], text=True), array_literal([k[1] for k in keys], text=True)


KEY_SEQ_BITS: Final = 64
"""An entry id ``ms-seq`` is the ledger key ``ms * 2**64 + seq``: exact for every id Redis
accepts (both parts are unsigned 64-bit), ordered as Redis orders ids."""


def entry_key(entry_id: bytes) -> int:
    """``b"1763800000000-3"`` -> ``1763800000000 * 2**64 + 3``."""
    ms, seq = split_entry_id(entry_id)
    return ms << KEY_SEQ_BITS | seq


class _Range(NamedTuple):
    """Items ``start:stop`` of a claim, consecutive entries of one stream (``sid``)."""

    sid: int
    start: int
    stop: int


def _runs(sid: int, keys: list[tuple[int, int]], start: int, gaps: list[int]) -> Iterator[_Range]:
    """Split ``keys[start:]`` (one ``>`` read of stream ``sid``, in order) into runs that
    no left-out entry (``gaps``, sorted keys) falls inside."""
    g = 0
    run = start
    for i in range(start + 1, len(keys)):
        prev, key = keys[i - 1][1], keys[i][1]
        while g < len(gaps) and gaps[g] < prev:
            g += 1
        if key <= prev or (g < len(gaps) and gaps[g] < key):  # out of order (never for `>`), or a gap
            yield _Range(sid, run, i)
            run = i
    if run < len(keys):
        yield _Range(sid, run, len(keys))


def _covered(
    keys: list[tuple[int, int]],
    items: list[Accepted],
    ranges: list[_Range],
    taken: set[tuple[int, int]],
    singles: set[tuple[int, int]],
) -> list[Accepted]:
    """The items the ledger took for this transaction, each entry once: the runs inserted
    whole (``taken``, by first key) and the entries inserted one by one (single-entry
    ranges in ``taken``, entries of conflicting runs in ``singles``)."""
    fresh = []
    for r in ranges:
        if r.stop - r.start > 1:
            if (r.sid, keys[r.start][1]) in taken:
                fresh.extend(items[r.start : r.stop])
                continue
            pool = singles
        else:
            pool = taken
        for i in range(r.start, r.stop):
            if keys[i] in pool:
                pool.discard(keys[i])  # a second copy of the entry in the batch is not counted again
                fresh.append(items[i])
    return fresh
