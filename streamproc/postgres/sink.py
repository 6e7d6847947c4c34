"""Postgres side: the daemon's connection, its streams and the ledger's upkeep.

:class:`PostgresSink` opens (and reopens) the connection, registers the streams,
prunes the ledger and hands out one :class:`streamproc.postgres.batch.BatchTransaction`
per batch (the ledger claim, sessions and rollup upserts, in one transaction). Only
after its COMMIT does the worker XACK.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import psycopg

from streamproc.errors import SinkUnavailable
from streamproc.postgres.batch import KEY_SEQ_BITS, BatchTransaction, entry_key
from streamproc.postgres.faults import translate
from streamproc.postgres.session import Session, Timeouts, connect
from streamproc.postgres.sessions import prune as prune_sessions


class PostgresSink:
    """The daemon's Postgres side: one :class:`Session` (opened lazily, reopened after a loss).

    Every psycopg error leaves through :func:`streamproc.postgres.faults.translate`:
    :class:`EntryRejected`, :class:`TransactionAborted`/:class:`SinkUnavailable`
    (retry), :class:`SinkMisconfigured`/:class:`SchemaNotReady` (exit 2).
    """

    def __init__(self, database_url: str, schema: str, timeouts: Timeouts | None = None) -> None:
        self._url = database_url
        self._schema = schema
        self._timeouts = timeouts or Timeouts()
        self._conn: Session | None = None
        self._stream_ids: dict[str, int] = {}
        self.reconnects = 0

    def twin(self) -> PostgresSink:
        """Another connection to the same schema, sharing the stream ids (for another thread)."""
        other = PostgresSink(self._url, self._schema, self._timeouts)
        other._stream_ids = self._stream_ids
        return other

    # -- connection -----------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None and not self._conn.closed:
            return
        if self._conn is not None:
            self.reconnects += 1
        self._conn = connect(self._url, self._schema, timeouts=self._timeouts)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> Session:
        self.open()
        assert self._conn is not None
        return self._conn

    def known_streams(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` a daemon of this schema consumed before (registered at an earlier
        start): their consumer group existed, so a missing one vanished and is not recreated."""
        with self._errors(), self.conn.transaction():
            rows = self.conn.execute("SELECT name FROM streams WHERE name = ANY(%s)", (list(names),)).fetchall()
        return {str(name) for (name,) in rows}

    def register_streams(self, names: Sequence[str]) -> dict[str, int]:
        """Give each stream a small id for the ledger (idempotent)."""
        with self._errors(), self.conn.transaction():
            self.conn.execute(
                "INSERT INTO streams (name) SELECT unnest(%s::text[]) ORDER BY 1 ON CONFLICT DO NOTHING",
                (sorted(names),),
            )
            rows = self.conn.execute("SELECT name, id FROM streams WHERE name = ANY(%s)", (list(names),)).fetchall()
        self._stream_ids.update({name: sid for name, sid in rows})
        return dict(self._stream_ids)

    # -- applying a batch -----------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[BatchTransaction]:
        """One batch, one transaction; commits on clean exit."""
        with self._errors(), self.conn.transaction():
            yield BatchTransaction(self.conn, self._stream_ids)

    def prune_ledger(self, keep_from_ms: Mapping[str, int]) -> int:
        """Forget ledger rows of entries older than ``keep_from_ms[stream]``.

        The caller passes, per stream, the lower of the first entry still in
        the stream and ``now - retention``: an entry can only come back while
        it is in the stream (or in a snapshot younger than the retention).
        """
        removed = 0
        with self._errors(), self.conn.transaction():
            for stream, before_ms in sorted(keep_from_ms.items()):
                sid = self._stream_ids.get(stream)
                if sid is None:
                    continue
                cur = self.conn.execute(
                    "DELETE FROM applied_ranges WHERE stream_id = %s AND ids << numrange(%s, NULL)",
                    (sid, before_ms << KEY_SEQ_BITS),
                )
                removed += cur.rowcount
            if keep_from_ms:
                cur = self.conn.execute("DELETE FROM producer_ids WHERE entry_ms < %s", (min(keep_from_ms.values()),))
                removed += cur.rowcount
                removed += prune_sessions(self.conn, min(keep_from_ms.values()))
        return removed

    def covered(self, stream: str, entry_ids: Sequence[bytes]) -> int:
        """How many of ``entry_ids`` (entries of ``stream``) the ledger holds as applied
        (reads the stream's whole ledger: for checks and tests, not the batch path)."""
        sid = self._stream_ids.get(stream)
        if sid is None or not entry_ids:
            return 0
        with self._errors(), self.conn.transaction():
            rows = self.conn.execute(
                "SELECT lower(ids), upper(ids) FROM applied_ranges WHERE stream_id = %s ORDER BY lower(ids)", (sid,)
            ).fetchall()
        lows = [int(lo) for lo, _ in rows]
        n = 0
        for key in map(entry_key, entry_ids):
            i = bisect.bisect_right(lows, key) - 1  # the last range starting at or before the key
            n += i >= 0 and key <= int(rows[i][1])
        return n

    def applied(self, stream: str, entry_ids: Sequence[bytes]) -> set[bytes]:
        """Those of ``entry_ids`` (entries of ``stream``) the ledger holds as applied: one query
        over their keys (for the few entries past max_deliveries, not the batch path)."""
        sid = self._stream_ids.get(stream)
        if sid is None or not entry_ids:
            return set()
        keys = {entry_key(eid): eid for eid in entry_ids}
        with self._errors(), self.conn.transaction():
            rows = self.conn.execute(
                "SELECT k.key FROM unnest(%t::numeric[]) AS k(key) WHERE EXISTS"
                " (SELECT 1 FROM applied_ranges a WHERE a.stream_id = %s AND a.ids @> k.key)",
                (list(keys), sid),
            ).fetchall()
        return {keys[int(key)] for (key,) in rows}

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate psycopg errors into streamproc's at the edge (see :mod:`.faults`).

        A transient failure the server did not answer with a SQLSTATE (the connection was cut,
        or libpq was left mid-command: "another command is already in progress") leaves the
        connection in a state psycopg may not mark broken: it is dropped, and the retry opens a
        new one instead of failing on the old one for ever."""
        try:
            yield
        except psycopg.Error as exc:
            error = translate(exc, "commit", self._schema, self._role())
            if isinstance(error, SinkUnavailable) and (self._conn is None or self._conn.broken or not exc.sqlstate):
                self.close()
            raise error from exc

    def _role(self) -> str:
        try:
            return self._conn.info.user if self._conn is not None else ""
        except psycopg.Error:
            return ""


def wait_for_postgres(database_url: str, timeout_s: float) -> None:
    """Block until Postgres accepts connections (used by local servers and tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(database_url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
