"""Redis side: consumer group reads, reclaims, acks and dead letters (see :mod:`.deadletters`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Self

import redis.exceptions as rx

from streamproc.config import Settings
from streamproc.core.entryid import split_entry_id
from streamproc.errors import GroupMissing, SourceUnavailable
from streamproc.redis.classify import no_such_key, slot_map_changed, stream_gone, translate
from streamproc.redis.client import Client, connect, is_cluster, refresh_slot_map
from streamproc.redis.deadletters import DeadLetter, write_dead_letters
from streamproc.redis.gaps import read_counting_gaps
from streamproc.redis.reclaim import CURSOR_START, Entry, pending_here, reclaim_stream, refresh_held
from streamproc.redis.url import parse_redis_url

# On a cluster each stream is read on its own; with nothing new anywhere the worker
# waits on one stream at a time, this long at most, so new entries elsewhere wait no longer.
CLUSTER_IDLE_BLOCK_MS: Final = 100


@dataclass
class Batch:
    """Entries read in one step, grouped by stream."""

    entries: dict[str, list[Entry]] = field(default_factory=dict)
    delivery_counts: dict[str, dict[bytes, int]] = field(default_factory=dict)
    trimmed: dict[str, list[bytes]] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)  # deleted before the group read them
    alone: bool = False  # one entry redelivered too often to share a batch (see redis.reclaim)
    waiting: bool = False  # such an entry was left unclaimed: this process held other entries
    # Read with XREADGROUP `>`: each stream's entries are consecutive in the stream (the
    # ledger claims them as ranges, see migration 009).
    read_new: bool = False

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def is_empty(self) -> bool:
        return not self.entries and not self.trimmed


@dataclass(frozen=True)
class GroupState:
    stream: str
    length: int
    lag: int | None
    pending: int
    last_delivered_id: str
    last_generated_id: str


class RedisSource:
    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        group: str,
        consumer: str,
        socket_timeout_s: float,
        client: Client | None = None,
        cluster: bool = False,
    ) -> None:
        self.streams = list(streams)
        self.group = group
        self.consumer = consumer
        self._client = client
        self._connect_args = (url, cluster, socket_timeout_s)
        self._probe: tuple[str, int] | None = None  # host and port of a plain URL, for a non-Redis server
        self._tls = False
        self._idle_turn = 0
        self._cursors: dict[str, bytes] = {}  # XAUTOCLAIM's cursor per stream, kept between turns

    @property
    def client(self) -> Client:
        """Made on first use, inside ``_errors()``: a cluster client connects as it is made, and
        an unreachable cluster must be retried like an unreachable server, not crash the start."""
        if self._client is None:
            try:
                url, cluster, timeout = self._connect_args
                target = parse_redis_url(url, cluster=cluster)
                self._probe, self._tls = target.address, target.scheme == "rediss"
                self._client = connect(url, cluster=cluster, socket_timeout=timeout, health_check_interval=30)
            except rx.RedisClusterException as exc:
                raise SourceUnavailable(
                    f"{exc} (are the seed nodes up, and may this Redis user run CLUSTER SLOTS and COMMAND?)"
                ) from exc
        return self._client

    @classmethod
    def from_settings(
        cls, settings: Settings, consumer: str | None = None, streams: Sequence[str] | None = None
    ) -> Self:
        return cls(
            settings.redis_url,
            settings.streams if streams is None else streams,
            settings.group,
            settings.consumer if consumer is None else consumer,
            settings.socket_timeout_s,
            cluster=settings.redis_cluster,
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Every Redis failure classified once (:func:`streamproc.redis.classify.translate`):
        transient -> SourceUnavailable (retried), permanent -> SourceMisconfigured (exit 2),
        vanished stream or group -> GroupMissing (exit 3). On a cluster client a MOVED/ASK
        (whatever the command: read, per-slot MULTI, reclaim, ack, dead letter, XINFO) is
        transient and the slot map is refreshed before the retry."""
        try:
            yield
        except (rx.RedisError, rx.RedisClusterException) as exc:
            cluster = self._connect_args[1] or (self._client is not None and is_cluster(self._client))
            if self._client is not None and slot_map_changed(exc):
                refresh_slot_map(self._client)  # nothing on a single Redis
            raise translate(exc, group=self.group, probe=self._probe, cluster=cluster, tls=self._tls) from exc

    def ping(self) -> None:
        with self._errors():
            self.client.ping()

    def ensure_groups(self, start_id: str = "0", known: Callable[[], Collection[str]] = frozenset) -> list[str]:
        """Create the consumer group on each stream (MKSTREAM); returns those created.

        A least-privilege account may not create groups (NOPERM): then each
        group must already exist, made by `streamproc setup` with more rights.
        ``known()``: streams consumed before (by this deployment, says Postgres), asked only
        when a group is missing. Their
        group existed; if it is missing now it vanished (the stream was deleted, flushed
        or evicted), and recreating it at ``start_id`` would skip or repeat data
        unknowingly: GroupMissing (exit 3) instead, `streamproc setup` recreates it.
        """
        created = []
        consumed: Collection[str] | None = None
        with self._errors():
            for stream in self.streams:
                if self._has_group(stream):
                    continue  # no XGROUP CREATE attempt: a least-privilege user would log NOPERM
                consumed = known() if consumed is None else consumed
                if stream in consumed and not self._has_group(stream):  # (a worker starting alongside made it)
                    raise GroupMissing(
                        f"consumer group {self.group!r} is missing on stream {stream!r}, which this deployment"
                        " consumed before: the stream was deleted, flushed or evicted, or Redis restarted empty."
                        " Not recreating it, so no data is skipped unknowingly: run `streamproc setup` once you"
                        " have checked."
                    )
                try:
                    self.client.xgroup_create(stream, self.group, id=start_id, mkstream=True)
                    created.append(stream)
                except rx.NoPermissionError:
                    self._require_group(stream)
                except rx.ResponseError as exc:
                    if not str(exc).startswith("BUSYGROUP"):
                        raise
        return created

    def _has_group(self, stream: str) -> bool:
        try:
            groups = self.client.xinfo_groups(stream)
        except rx.ResponseError as exc:
            if no_such_key(exc):
                return False  # no such stream
            raise  # BUSY, MASTERDOWN, NOPERM...: nothing known about the group; classified by _errors()
        return any(_s(g["name"]) == self.group for g in groups)

    def _require_group(self, stream: str) -> None:
        if not self._has_group(stream):
            raise GroupMissing(
                f"consumer group {self.group!r} does not exist on stream {stream!r} and this Redis user"
                " may not create it: run `streamproc setup` with a provisioning account first"
            )

    # -- reading ----------------------------------------------------------------

    def read_new(self, count: int, block_ms: int) -> Batch:
        """New entries (read with ``>``: consecutive in each stream, ``read_new``): first
        without blocking, counting entries deleted before the group read them (:mod:`.gaps`, per
        stream key on a cluster too); if none came, a read blocking up to ``block_ms`` (on a
        cluster: on one stream, up to ``CLUSTER_IDLE_BLOCK_MS``)."""
        with self._errors():
            reply, lost = read_counting_gaps(self.client, self.streams, self.group, self.consumer, count)
        if reply or lost:
            batch = _batch_from_reply(reply)
            batch.lost = lost
        else:
            with self._errors():
                if is_cluster(self.client):
                    batch = _batch_from_reply(self._wait_on_next_stream(count, min(block_ms, CLUSTER_IDLE_BLOCK_MS)))
                else:
                    batch = _batch_from_reply(self._read(">", count, block_ms))
        batch.read_new = True
        return batch

    def read_own_pending(self, count: int) -> Batch:
        """This consumer's pending entries (after a restart), oldest first."""
        batch = _batch_from_reply(self._read("0", count))
        with self._errors():
            batch.delivery_counts = self._delivery_counts(batch)
        return batch

    def _read(self, start: str, count: int, block_ms: int | None = None) -> Any:
        """XREADGROUP from ``start`` on every stream; blocks up to ``block_ms`` when given
        (never on a cluster, where :meth:`read_new` waits on one stream at a time)."""
        with self._errors():
            if not is_cluster(self.client):
                return self.client.xreadgroup(
                    self.group, self.consumer, {s: start for s in self.streams}, count=count, block=block_ms
                )
            return self._read_each(start, count)

    def _read_each(self, start: str, count: int) -> list[Any]:
        """One XREADGROUP per stream (a cluster allows one slot per command), pipelined."""
        pipe = self.client.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xreadgroup(self.group, self.consumer, {stream: start}, count=count)
        return [part for reply in pipe.execute() for part in (reply or [])]

    def _wait_on_next_stream(self, count: int, block_ms: int) -> list[Any]:
        """Block on one stream, a different one each time, so every stream gets its turn."""
        stream = self.streams[self._idle_turn % len(self.streams)]
        self._idle_turn += 1
        try:
            reply = self.client.xreadgroup(self.group, self.consumer, {stream: ">"}, count=count, block=block_ms)
        except rx.ResponseError as exc:
            # MIGRATE moving the stream's slot to another node wakes the read with "UNBLOCKED the
            # stream key no longer exists" too: the group followed its stream unless it is gone.
            if not stream_gone(exc) or not self._has_group(stream):
                raise
            refresh_slot_map(self.client)
            raise SourceUnavailable(
                f"stream {stream!r} moved to another cluster node while the read waited: {exc}"
            ) from exc
        return list(reply or [])

    def own_pending_max_deliveries(self, scan: int = 10_000) -> int:
        """Highest delivery count among this consumer's pending entries (0 if none); no side effect."""
        highest = 0
        with self._errors():
            for stream in self.streams:
                rows = self.client.xpending_range(stream, self.group, "-", "+", scan, consumername=self.consumer)
                highest = max([highest, *(int(row["times_delivered"]) for row in rows)])
        return highest

    def reclaim(
        self, min_idle_ms: int, count: int, in_hand: Collection[tuple[str, bytes]] = (), alone_ok: bool = True
    ) -> Batch:
        """Take over up to ``count`` entries idle longer than ``min_idle_ms``
        (:func:`~streamproc.redis.reclaim.reclaim_stream`, one stream after the other): other
        consumers' entries, and this consumer's own entries that it does not hold.

        Each stream's PEL is walked from a cursor kept between calls. Own entries *not* in hand
        (a delivery or an XACK lost) are recovered like anyone else's. Entries in hand
        (``in_hand``: stream and id) look busy (:class:`~streamproc.daemon.inhand.Refresher`);
        should one be claimed anyway, it is left out of the batch. Entries deleted from the
        stream while pending come back as XAUTOCLAIM's deleted ids (Redis >= 7): ``trimmed``.

        An entry delivered ``BATCH_DELIVERIES`` times before comes in a batch of its own
        (``alone``), and only with ``alone_ok`` and nothing else claimed in this call; else the
        batch says ``waiting``.
        """
        batch = Batch()
        with self._errors():
            for stream in self.streams:
                want = count - len(batch)
                if want <= 0 or batch.alone:
                    break
                skip = {eid for s, eid in in_hand if s == stream}
                cursor, alone = self._cursors.get(stream, CURSOR_START), alone_ok and not batch.entries
                args = (stream, self.group, self.consumer, min_idle_ms, want, cursor, skip, alone)
                got = reclaim_stream(self.client, *args)
                self._cursors[stream] = got.cursor
                batch.waiting = batch.waiting or got.waiting
                batch.alone = got.alone
                if got.entries:
                    batch.entries[stream] = got.entries
                    batch.delivery_counts[stream] = got.counts
                trimmed = [eid for eid in got.deleted if eid not in skip]
                if trimmed:
                    batch.trimmed[stream] = trimmed
        return batch

    def refresh(self, held: Mapping[str, Sequence[bytes]]) -> tuple[int, int]:
        """Reset the idle time of entries this consumer holds: ``XCLAIM <stream> <group> <self> 0
        <ids> JUSTID`` (no delivery counted). Returns (entries refreshed, entries no longer
        pending under this consumer).

        Only the ids XPENDING still lists under this consumer are claimed: XCLAIM with min idle
        0 would take an entry back from a consumer that reclaimed it while this process could
        not refresh it (frozen, cut from Redis); that one keeps it. Acked entries are not in the
        PEL, so XCLAIM skips them; entries deleted from the stream are dropped from the PEL.
        Raises SourceUnavailable / SourceError like every call here.
        """
        refreshed = gone = 0
        with self._errors():
            for stream, ids in held.items():
                if not ids:
                    continue
                n = refresh_held(self.client, stream, self.group, self.consumer, ids)
                refreshed += n
                gone += len(ids) - n
        return refreshed, gone

    def _delivery_counts(self, batch: Batch) -> dict[str, dict[bytes, int]]:
        return {
            stream: pending_here(self.client, stream, self.group, self.consumer, [eid for eid, _ in entries])
            for stream, entries in batch.entries.items()
            if entries
        }

    # -- acknowledging ------------------------------------------------------------

    def ack(self, acks: Mapping[str, Sequence[bytes]], dead: Mapping[str, Sequence[DeadLetter]]) -> dict[str, int]:
        """Dead-letter bad entries (:func:`write_dead_letters`, which acks them) and ack the others.

        Returns, per stream, the number of dead letters actually written (a bad entry
        already dead-lettered, by this or an earlier delivery, is not written again).
        """
        with self._errors():
            written = {
                stream: write_dead_letters(self.client, stream, self.group, self.consumer, items)
                for stream, items in dead.items()
                if items
            }
            if any(acks.values()):
                pipe = self.client.pipeline(transaction=False)
                for stream, ids in acks.items():
                    if ids:
                        pipe.xack(stream, self.group, *ids)
                pipe.execute()
        return written

    # -- state ---------------------------------------------------------------------

    def group_states(self) -> list[GroupState]:
        out = []
        with self._errors():
            for stream in self.streams:
                info = self.client.xinfo_stream(stream)
                groups = self.client.xinfo_groups(stream)
                mine = next((g for g in groups if _s(g["name"]) == self.group), None)
                if mine is None:
                    raise GroupMissing(
                        f"consumer group {self.group!r} is missing on stream {stream!r};"
                        " run `streamproc setup` once you have checked why"
                    )
                out.append(
                    GroupState(
                        stream=stream,
                        length=int(info["length"]),
                        lag=None if mine.get("lag") is None else int(mine["lag"]),
                        pending=int(mine["pending"]),
                        last_delivered_id=_s(mine["last-delivered-id"]),
                        last_generated_id=_s(info["last-generated-id"]),
                    )
                )
        return out

    def drained(self) -> bool:
        """No pending entries and no entry after the group's last-delivered id, on any stream
        this worker reads: nothing more can be delivered.

        Redis's lag is not used: it is nil after an XDEL, and before Redis 8 it stays too high
        for good once the group read across entries trimmed before it got to them (the group's
        read counter misses the trimmed ones), so a drain waiting for lag 0 would never end.
        One XRANGE ``(<last-delivered-id> + COUNT 1`` per stream asks the stream itself.
        Pending entries deleted from the stream leave the PEL when reclaimed (XAUTOCLAIM's
        deleted ids), after ``min_idle_ms``.
        """
        for state in self.group_states():
            if state.pending or self._entry_after(state.stream, state.last_delivered_id):
                return False
        return True

    def _entry_after(self, stream: str, entry_id: str) -> bool:
        with self._errors():
            return bool(self.client.xrange(stream, min="(" + entry_id, max="+", count=1))

    def first_entry_ms(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        with self._errors():
            for stream in self.streams:
                first = self.client.xrange(stream, count=1)
                out[stream] = split_entry_id(_s(first[0][0] or b"0-0"))[0] if first else None
        return out

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _batch_from_reply(reply: Any) -> Batch:
    batch = Batch()
    for stream, entries in reply or []:
        name = _s(stream)
        kept = [entry for entry in entries if entry[1]]
        if kept:
            batch.entries.setdefault(name, []).extend(kept)
        if len(kept) < len(entries):
            # Since Redis 7 a pending entry deleted from the stream comes back empty.
            batch.trimmed.setdefault(name, []).extend(eid for eid, fields in entries if not fields)
    return batch


def _b(value: bytes | str | int) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
